//! Publishing an image's trust artefacts — signatures, attestations, SBOMs, scan reports —
//! exactly as the real tools store them, so discovery and verification are tested against
//! what a registry really holds.
//!
//! Two layouts, because registries differ and so do the tools' fallbacks:
//! - [`Layout::TagSchema`] is a plain `docker-registry` (distribution 2.8 has no referrers
//!   API). cosign keeps its signatures, attestations and SBOMs in the tags
//!   `sha256-<hex>.sig`, `.att` and `.sbom`, and appends: a second signature is a second
//!   layer of the same `.sig` manifest. OCI 1.1 artifacts (Notation, ORAS, Sigstore
//!   bundles, SBOM and report artifacts) are pushed by digest with a `subject` and listed in
//!   the referrers tag schema index `sha256-<hex>`, updated read-modify-write as the
//!   distribution spec's "Referrers Tag Schema" says.
//! - [`Layout::Referrers`] is a registry with the OCI 1.1 referrers API: every artefact is
//!   its own manifest with a `subject`, PUT through [`ReferrersProxy::host`] so the proxy
//!   lists it. cosign in `--registry-referrers-mode=oci-1-1` (cosign's
//!   `WriteSignaturesExperimentalOCI`) keeps the signature image as is and sets
//!   `config.mediaType` to `application/vnd.dev.cosign.artifact.sig.v1+json` (`…att…` for
//!   attestations), with no `artifactType` field; Sigstore bundles follow cosign's
//!   `specs/BUNDLE_SPEC.md` (empty config, `artifactType` the bundle media type); Notation
//!   writes `artifactType: application/vnd.cncf.notary.signature` with one
//!   `application/jose+json` (or `application/cose`) layer.
//!
//! Reports and SBOMs follow the published formats: Trivy's JSON report (`SchemaVersion` 2,
//! `pkg/types/report.go`), the cosign vuln predicate (`scanner.result` = a Trivy report, as
//! `trivy image --format cosign-vuln` writes it), the in-toto `vulns` predicate, SPDX 2.3
//! JSON and CycloneDX 1.5 JSON. Test-only code: errors are `anyhow`.

use anyhow::{Context as _, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::referrers::ReferrersProxy;
use crate::registry::{
    OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, PushedManifest, TestRegistry,
};
use crate::signing::{
    TestKey, TestLeaf, TestNotation, TestRekor, cosign_payload, dsse_envelope, sigstore_bundle,
};

/// Media types the tools write.
pub mod media {
    /// A cosign simple-signing layer (`.sig`).
    pub const COSIGN_SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
    /// cosign's signature artifact type in OCI 1.1 mode (as `config.mediaType`).
    pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
    /// cosign's attestation artifact type in OCI 1.1 mode (as `config.mediaType`).
    pub const COSIGN_ATT_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.att.v1+json";
    /// A DSSE envelope layer (`.att`).
    pub const DSSE_ENVELOPE: &str = "application/vnd.dsse.envelope.v1+json";
    /// The payload type of an in-toto statement in a DSSE envelope.
    pub const IN_TOTO: &str = "application/vnd.in-toto+json";
    pub const SIGSTORE_BUNDLE_V03: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
    pub const NOTATION_SIGNATURE: &str = "application/vnd.cncf.notary.signature";
    pub const JOSE: &str = "application/jose+json";
    pub const COSE: &str = "application/cose";
    pub const SPDX_JSON: &str = "application/spdx+json";
    pub const CYCLONEDX_JSON: &str = "application/vnd.cyclonedx+json";
    /// `cosign attach sbom --type spdxjson` layer media type.
    pub const COSIGN_SBOM_SPDX_JSON: &str = "text/spdx+json";
    /// A Trivy JSON report attached as an artifact (`oras attach --artifact-type`).
    pub const TRIVY_REPORT: &str = "application/vnd.aquasec.trivy.report+json";
}

/// Annotation keys the tools write.
pub mod annotation {
    pub const SIGNATURE: &str = "dev.cosignproject.cosign/signature";
    pub const CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
    pub const CHAIN: &str = "dev.sigstore.cosign/chain";
    pub const BUNDLE: &str = "dev.sigstore.cosign/bundle";
    /// On a cosign `.att` layer.
    pub const PREDICATE_TYPE: &str = "predicateType";
    pub const BUNDLE_CONTENT: &str = "dev.sigstore.bundle.content";
    pub const BUNDLE_PREDICATE_TYPE: &str = "dev.sigstore.bundle.predicateType";
    pub const CREATED: &str = "org.opencontainers.image.created";
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// Notation: the SHA-256 thumbprints of the signing chain, a JSON array string.
    pub const NOTATION_THUMBPRINTS: &str = "io.cncf.notary.x509chain.thumbprint#S256";
}

/// Predicate types.
pub mod predicate {
    pub const COSIGN_VULN: &str = "https://cosign.sigstore.dev/attestation/vuln/v1";
    pub const IN_TOTO_VULNS: &str = "https://in-toto.io/attestation/vulns";
    pub const SPDX: &str = "https://spdx.dev/Document";
    pub const CYCLONEDX: &str = "https://cyclonedx.org/bom";
    pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
}

/// Where artefacts go: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    TagSchema,
    Referrers,
}

/// One cosign signature: a simple-signing payload and its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignSignature {
    pub payload: Vec<u8>,
    /// Base64 signature over `payload`.
    pub signature: String,
    /// Keyless: the leaf certificate (PEM).
    pub certificate: Option<String>,
    /// Keyless: intermediates then root (PEM).
    pub chain: Option<String>,
    /// Keyless: the Rekor bundle annotation (JSON).
    pub bundle: Option<String>,
}

impl CosignSignature {
    /// `cosign sign --key`: `key` signs the payload naming `digest` at `docker_reference`.
    pub fn with_key(key: &TestKey, docker_reference: &str, digest: &str) -> Self {
        let payload = cosign_payload(docker_reference, digest);
        CosignSignature {
            signature: key.sign(&payload),
            payload,
            certificate: None,
            chain: None,
            bundle: None,
        }
    }

    /// `cosign sign` keyless: the Fulcio-like `leaf` signs; certificate and chain go in
    /// the annotations, and with `rekor` the Rekor bundle of an entry logged at
    /// `integrated_time` (Unix seconds).
    pub fn keyless(
        leaf: &TestLeaf,
        rekor: Option<&TestRekor>,
        integrated_time: i64,
        docker_reference: &str,
        digest: &str,
    ) -> Self {
        let payload = cosign_payload(docker_reference, digest);
        let signature = leaf.key.sign(&payload);
        let bundle =
            rekor.map(|r| r.rekor_bundle(&payload, &signature, &leaf.cert_pem, integrated_time));
        CosignSignature {
            payload,
            signature,
            certificate: Some(leaf.cert_pem.clone()),
            chain: Some(leaf.chain_pem.clone()),
            bundle,
        }
    }

    /// The payload altered after signing (another docker reference, same digest): the
    /// signature no longer matches it.
    pub fn tampered(mut self) -> Self {
        let text = String::from_utf8_lossy(&self.payload).into_owned();
        let altered = text.replacen(
            r#""docker-reference":""#,
            r#""docker-reference":"evil.example/"#,
            1,
        );
        self.payload = if altered == text {
            let mut p = self.payload.clone();
            p.push(b' ');
            p
        } else {
            altered.into_bytes()
        };
        self
    }

    fn annotations(&self) -> Value {
        let mut a = json!({ annotation::SIGNATURE: self.signature });
        for (key, value) in [
            (annotation::CERTIFICATE, &self.certificate),
            (annotation::CHAIN, &self.chain),
            (annotation::BUNDLE, &self.bundle),
        ] {
            if let Some(v) = value {
                a[key] = Value::String(v.clone());
            }
        }
        a
    }
}

/// One cosign attestation: a DSSE envelope and its annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignAttestation {
    pub envelope: Vec<u8>,
    pub predicate_type: String,
    pub certificate: Option<String>,
    pub chain: Option<String>,
    pub bundle: Option<String>,
}

impl CosignAttestation {
    /// `cosign attest --key --type <predicate_type>`: an in-toto statement about `digest`
    /// at `name`, in a DSSE envelope signed by `key`.
    pub fn with_key(
        key: &TestKey,
        name: &str,
        digest: &str,
        predicate_type: &str,
        predicate: Value,
    ) -> Self {
        let statement = in_toto_statement(name, digest, predicate_type, predicate);
        CosignAttestation {
            envelope: dsse_envelope(media::IN_TOTO, &statement, key),
            predicate_type: predicate_type.to_owned(),
            certificate: None,
            chain: None,
            bundle: None,
        }
    }

    fn annotations(&self) -> Value {
        // cosign leaves the signature annotation empty: the signature is in the envelope.
        let mut a = json!({
            annotation::SIGNATURE: "",
            annotation::PREDICATE_TYPE: self.predicate_type,
        });
        for (key, value) in [
            (annotation::CERTIFICATE, &self.certificate),
            (annotation::CHAIN, &self.chain),
            (annotation::BUNDLE, &self.bundle),
        ] {
            if let Some(v) = value {
                a[key] = Value::String(v.clone());
            }
        }
        a
    }
}

/// Pushes trust artefacts of images in one repository, in one layout.
#[derive(Debug)]
pub struct Publisher<'a> {
    registry: &'a TestRegistry,
    /// The referrers proxy's host, for [`Layout::Referrers`].
    via: Option<String>,
    repository: String,
}

impl<'a> Publisher<'a> {
    /// cosign tags and the referrers tag schema, on the registry itself.
    pub fn tag_schema(registry: &'a TestRegistry, repository: &str) -> Self {
        Publisher {
            registry,
            via: None,
            repository: repository.to_owned(),
        }
    }

    /// OCI 1.1 referrers, pushed through `proxy` (in front of `registry`).
    pub fn referrers(registry: &'a TestRegistry, proxy: &ReferrersProxy, repository: &str) -> Self {
        Publisher {
            registry,
            via: Some(proxy.host()),
            repository: repository.to_owned(),
        }
    }

    /// Either, by `layout`.
    pub fn new(
        registry: &'a TestRegistry,
        proxy: &ReferrersProxy,
        repository: &str,
        layout: Layout,
    ) -> Self {
        match layout {
            Layout::TagSchema => Self::tag_schema(registry, repository),
            Layout::Referrers => Self::referrers(registry, proxy, repository),
        }
    }

    pub fn layout(&self) -> Layout {
        if self.via.is_some() {
            Layout::Referrers
        } else {
            Layout::TagSchema
        }
    }

    /// `<registry host>/<repository>`: what a signer names in its payloads.
    pub fn docker_reference(&self) -> String {
        format!("{}/{}", self.registry.host(), self.repository)
    }

    /// `cosign sign --key` with each of `keys` (one signature per key).
    pub async fn cosign_sign(
        &self,
        subject: &PushedManifest,
        keys: &[&TestKey],
    ) -> anyhow::Result<PushedManifest> {
        let reference = self.docker_reference();
        let signatures: Vec<CosignSignature> = keys
            .iter()
            .map(|k| CosignSignature::with_key(k, &reference, &subject.digest))
            .collect();
        self.cosign_signatures(subject, &signatures).await
    }

    /// cosign signatures of `subject`: appended to its `.sig` manifest (tag schema), or one
    /// new referrer holding them (OCI 1.1).
    pub async fn cosign_signatures(
        &self,
        subject: &PushedManifest,
        signatures: &[CosignSignature],
    ) -> anyhow::Result<PushedManifest> {
        let mut layers = Vec::new();
        for s in signatures {
            layers.push(Layer {
                media_type: media::COSIGN_SIMPLE_SIGNING.to_owned(),
                content: s.payload.clone(),
                annotations: s.annotations(),
            });
        }
        self.cosign_image(subject, "sig", media::COSIGN_SIG_ARTIFACT, layers)
            .await
    }

    /// `cosign sign` keyless with `leaf`, logged in `rekor` at `integrated_time`.
    pub async fn cosign_sign_keyless(
        &self,
        subject: &PushedManifest,
        leaf: &TestLeaf,
        rekor: &TestRekor,
        integrated_time: i64,
    ) -> anyhow::Result<PushedManifest> {
        let signature = CosignSignature::keyless(
            leaf,
            Some(rekor),
            integrated_time,
            &self.docker_reference(),
            &subject.digest,
        );
        self.cosign_signatures(subject, &[signature]).await
    }

    /// `notation sign` (JWS envelope) of `subject` by `signer`.
    pub async fn notation_sign(
        &self,
        subject: &PushedManifest,
        signer: &TestNotation,
    ) -> anyhow::Result<PushedManifest> {
        let envelope = signer.sign_jws(
            &subject.digest,
            &subject.media_type,
            subject.raw.len() as u64,
        );
        self.notation(subject, media::JOSE, &envelope).await
    }

    /// `cosign sign --new-bundle-format` keyless: a v0.3 Sigstore bundle whose message
    /// signature signs the subject's digest, logged at `integrated_time`.
    pub async fn sigstore_sign(
        &self,
        subject: &PushedManifest,
        leaf: &TestLeaf,
        rekor: &TestRekor,
        integrated_time: i64,
    ) -> anyhow::Result<PushedManifest> {
        let bundle = sigstore_bundle(leaf, rekor, &subject.digest, integrated_time);
        self.sigstore_bundle(subject, &bundle).await
    }

    /// `cosign attest --key`: an attestation of `predicate_type` signed by `key`.
    pub async fn cosign_attest(
        &self,
        subject: &PushedManifest,
        key: &TestKey,
        predicate_type: &str,
        predicate: Value,
    ) -> anyhow::Result<PushedManifest> {
        let attestation = CosignAttestation::with_key(
            key,
            &self.docker_reference(),
            &subject.digest,
            predicate_type,
            predicate,
        );
        self.cosign_attestations(subject, &[attestation]).await
    }

    /// cosign attestations of `subject`: appended to its `.att` manifest (tag schema), or
    /// one new referrer holding them (OCI 1.1).
    pub async fn cosign_attestations(
        &self,
        subject: &PushedManifest,
        attestations: &[CosignAttestation],
    ) -> anyhow::Result<PushedManifest> {
        let layers = attestations
            .iter()
            .map(|a| Layer {
                media_type: media::DSSE_ENVELOPE.to_owned(),
                content: a.envelope.clone(),
                annotations: a.annotations(),
            })
            .collect();
        self.cosign_image(subject, "att", media::COSIGN_ATT_ARTIFACT, layers)
            .await
    }

    /// `cosign attach sbom`: the `.sbom` tag with one layer of `media_type` (tag schema
    /// only: in OCI 1.1 registries SBOMs are artifacts, see [`Publisher::sbom`]).
    pub async fn cosign_attach_sbom(
        &self,
        subject: &PushedManifest,
        media_type: &str,
        sbom: &[u8],
    ) -> anyhow::Result<PushedManifest> {
        if self.via.is_some() {
            bail!("cosign attach sbom writes a tag; use Publisher::sbom for an OCI 1.1 registry");
        }
        let layer = Layer {
            media_type: media_type.to_owned(),
            content: sbom.to_vec(),
            annotations: json!({}),
        };
        let tag = cosign_tag(&subject.digest, "sbom");
        let raw = self.cosign_manifest(&[layer], OCI_CONFIG, None).await?;
        self.registry
            .push_manifest(&self.repository, &tag, OCI_MANIFEST, raw.as_bytes())
            .await?;
        pushed(raw, None).await
    }

    /// An SBOM artifact (`oras attach --artifact-type application/spdx+json`, Docker
    /// buildx, Harbor): artifact type and layer `media_type`.
    pub async fn sbom(
        &self,
        subject: &PushedManifest,
        media_type: &str,
        sbom: &[u8],
    ) -> anyhow::Result<PushedManifest> {
        self.artifact(subject, media_type, media_type, sbom, json!({}))
            .await
    }

    /// A Trivy JSON report attached as an artifact of type [`media::TRIVY_REPORT`].
    pub async fn trivy_report(
        &self,
        subject: &PushedManifest,
        report: &Value,
    ) -> anyhow::Result<PushedManifest> {
        self.artifact(
            subject,
            media::TRIVY_REPORT,
            media::TRIVY_REPORT,
            report.to_string().as_bytes(),
            json!({}),
        )
        .await
    }

    /// A Notation signature: artifact type [`media::NOTATION_SIGNATURE`], one envelope
    /// layer (`media_type` [`media::JOSE`] or [`media::COSE`]), the chain's thumbprints
    /// as notation annotates them when the envelope is a JWS with `x5c`.
    pub async fn notation(
        &self,
        subject: &PushedManifest,
        media_type: &str,
        envelope: &[u8],
    ) -> anyhow::Result<PushedManifest> {
        let mut annotations = json!({});
        if let Some(thumbprints) = jws_thumbprints(envelope) {
            annotations[annotation::NOTATION_THUMBPRINTS] = Value::String(thumbprints);
        }
        self.artifact(
            subject,
            media::NOTATION_SIGNATURE,
            media_type,
            envelope,
            annotations,
        )
        .await
    }

    /// A Sigstore bundle (cosign's `BUNDLE_SPEC.md`): artifact type and layer
    /// [`media::SIGSTORE_BUNDLE_V03`], with the content annotations.
    pub async fn sigstore_bundle(
        &self,
        subject: &PushedManifest,
        bundle: &[u8],
    ) -> anyhow::Result<PushedManifest> {
        let parsed: Value = serde_json::from_slice(bundle).unwrap_or_default();
        let mut annotations = json!({});
        if parsed.get("dsseEnvelope").is_some() {
            annotations[annotation::BUNDLE_CONTENT] = "dsse-envelope".into();
            let predicate_type = parsed["dsseEnvelope"]["payload"]
                .as_str()
                .and_then(|p| STANDARD.decode(p).ok())
                .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
                .and_then(|s| s["predicateType"].as_str().map(str::to_owned));
            if let Some(t) = predicate_type {
                annotations[annotation::BUNDLE_PREDICATE_TYPE] = t.into();
            }
        } else {
            annotations[annotation::BUNDLE_CONTENT] = "message-signature".into();
        }
        self.artifact(
            subject,
            media::SIGSTORE_BUNDLE_V03,
            media::SIGSTORE_BUNDLE_V03,
            bundle,
            annotations,
        )
        .await
    }

    /// An OCI 1.1 artifact of `subject`: empty config, `artifactType`, one layer, the
    /// manifest `annotations`. Tag schema: pushed by digest and added to the `sha256-<hex>`
    /// index; OCI 1.1: PUT through the referrers proxy.
    pub async fn artifact(
        &self,
        subject: &PushedManifest,
        artifact_type: &str,
        layer_media_type: &str,
        content: &[u8],
        annotations: Value,
    ) -> anyhow::Result<PushedManifest> {
        let empty = self.registry.push_blob(&self.repository, b"{}").await?;
        let blob = self.registry.push_blob(&self.repository, content).await?;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": empty, "size": 2},
            "layers": [{"mediaType": layer_media_type, "digest": blob, "size": content.len()}],
            "subject": subject_descriptor(subject),
        });
        if annotations.as_object().is_some_and(|a| !a.is_empty()) {
            manifest["annotations"] = annotations;
        }
        let raw = manifest.to_string();
        let digest = self.put_referrer(&raw).await?;
        if self.via.is_none() {
            self.add_to_referrers_index(subject, &digest, &manifest, raw.len())
                .await?;
        }
        pushed(raw, Some(artifact_type.to_owned())).await
    }

    /// A cosign "image" (`.sig`, `.att`): appended to the tag in the tag schema; a new
    /// referrer whose `config.mediaType` is `artifact_type` in OCI 1.1.
    async fn cosign_image(
        &self,
        subject: &PushedManifest,
        suffix: &str,
        artifact_type: &str,
        new_layers: Vec<Layer>,
    ) -> anyhow::Result<PushedManifest> {
        if self.via.is_some() {
            let raw = self
                .cosign_manifest(&new_layers, artifact_type, Some(subject))
                .await?;
            self.put_referrer(&raw).await?;
            return pushed(raw, Some(artifact_type.to_owned())).await;
        }
        let tag = cosign_tag(&subject.digest, suffix);
        let mut layers = self.existing_layers(&tag).await?;
        for layer in new_layers {
            if !layers
                .iter()
                .any(|l| l.content == layer.content && l.annotations == layer.annotations)
            {
                layers.push(layer);
            }
        }
        let raw = self.cosign_manifest(&layers, OCI_CONFIG, None).await?;
        self.registry
            .push_manifest(&self.repository, &tag, OCI_MANIFEST, raw.as_bytes())
            .await?;
        pushed(raw, None).await
    }

    /// The layers (with their content) of the cosign manifest at `tag`, if there is one.
    async fn existing_layers(&self, tag: &str) -> anyhow::Result<Vec<Layer>> {
        let Some((_, body)) = self
            .registry
            .try_get_manifest(&self.repository, tag)
            .await?
        else {
            return Ok(Vec::new());
        };
        let manifest: Value = serde_json::from_slice(&body).context("the cosign manifest")?;
        let mut layers = Vec::new();
        for l in manifest["layers"].as_array().cloned().unwrap_or_default() {
            let digest = l["digest"].as_str().context("a layer digest")?;
            let content = self.registry.get_blob(&self.repository, digest).await?;
            layers.push(Layer {
                media_type: l["mediaType"].as_str().unwrap_or_default().to_owned(),
                content,
                annotations: l.get("annotations").cloned().unwrap_or(json!({})),
            });
        }
        Ok(layers)
    }

    /// A cosign signature image manifest as go-containerregistry writes it: the layers
    /// uncompressed (diff id = digest) and a config naming them.
    async fn cosign_manifest(
        &self,
        layers: &[Layer],
        config_media_type: &str,
        subject: Option<&PushedManifest>,
    ) -> anyhow::Result<String> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for layer in layers {
            let digest = self
                .registry
                .push_blob(&self.repository, &layer.content)
                .await?;
            let mut d = json!({
                "mediaType": layer.media_type,
                "size": layer.content.len(),
                "digest": digest,
            });
            if layer.annotations.as_object().is_some_and(|a| !a.is_empty()) {
                d["annotations"] = layer.annotations.clone();
            }
            descriptors.push(d);
            diff_ids.push(Value::String(digest));
        }
        let config = json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "config": {},
        })
        .to_string();
        let config_digest = self
            .registry
            .push_blob(&self.repository, config.as_bytes())
            .await?;
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": config_media_type, "size": config.len(), "digest": config_digest},
            "layers": descriptors,
        });
        if let Some(s) = subject {
            manifest["subject"] = subject_descriptor(s);
        }
        Ok(manifest.to_string())
    }

    /// PUTs a referrer manifest by digest: through the proxy (OCI 1.1) or to the registry.
    async fn put_referrer(&self, raw: &str) -> anyhow::Result<String> {
        let digest = sha256(raw.as_bytes());
        match &self.via {
            Some(host) => {
                self.registry
                    .push_manifest_via(
                        host,
                        &self.repository,
                        &digest,
                        OCI_MANIFEST,
                        raw.as_bytes(),
                    )
                    .await
            }
            None => {
                self.registry
                    .push_manifest(&self.repository, &digest, OCI_MANIFEST, raw.as_bytes())
                    .await
            }
        }
    }

    /// Adds a referrer to the referrers tag schema index of `subject` (creating it), with
    /// its artifact type and annotations, as ORAS and notation do without the API.
    async fn add_to_referrers_index(
        &self,
        subject: &PushedManifest,
        digest: &str,
        manifest: &Value,
        size: usize,
    ) -> anyhow::Result<()> {
        let tag = subject.digest.replacen(':', "-", 1);
        let mut entries: Vec<Value> = match self
            .registry
            .try_get_manifest(&self.repository, &tag)
            .await?
        {
            Some((_, body)) => serde_json::from_slice::<Value>(&body)
                .context("the referrers tag index")?["manifests"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if entries.iter().any(|e| e["digest"] == digest) {
            return Ok(());
        }
        let mut entry = json!({"mediaType": OCI_MANIFEST, "digest": digest, "size": size});
        if let Some(t) = manifest["artifactType"]
            .as_str()
            .or_else(|| manifest["config"]["mediaType"].as_str())
        {
            entry["artifactType"] = t.into();
        }
        if let Some(a) = manifest.get("annotations") {
            entry["annotations"] = a.clone();
        }
        entries.push(entry);
        let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
        self.registry
            .push_manifest(
                &self.repository,
                &tag,
                OCI_INDEX,
                index.to_string().as_bytes(),
            )
            .await?;
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct Layer {
    media_type: String,
    content: Vec<u8>,
    annotations: Value,
}

fn cosign_tag(digest: &str, suffix: &str) -> String {
    format!("{}.{suffix}", digest.replacen(':', "-", 1))
}

fn subject_descriptor(subject: &PushedManifest) -> Value {
    json!({
        "mediaType": subject.media_type,
        "digest": subject.digest,
        "size": subject.raw.len(),
    })
}

fn sha256(bytes: &[u8]) -> String {
    let mut out = String::from("sha256:");
    for b in Sha256::digest(bytes) {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

async fn pushed(raw: String, artifact_type: Option<String>) -> anyhow::Result<PushedManifest> {
    let manifest: Value = serde_json::from_str(&raw)?;
    let size = manifest["config"]["size"].as_u64().unwrap_or(0)
        + manifest["layers"]
            .as_array()
            .map(|l| l.iter().filter_map(|d| d["size"].as_u64()).sum::<u64>())
            .unwrap_or(0);
    Ok(PushedManifest {
        digest: sha256(raw.as_bytes()),
        media_type: OCI_MANIFEST.to_owned(),
        config_digest: manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        raw,
        size,
        artifact_type,
    })
}

/// `["<sha256 hex of each x5c DER>", …]` of a JWS envelope, as notation annotates it.
fn jws_thumbprints(envelope: &[u8]) -> Option<String> {
    let jws: Value = serde_json::from_slice(envelope).ok()?;
    let chain = jws["header"]["x5c"].as_array()?;
    let prints: Vec<String> = chain
        .iter()
        .filter_map(|c| c.as_str())
        .filter_map(|c| STANDARD.decode(c).ok())
        .map(|der| sha256(&der).trim_start_matches("sha256:").to_owned())
        .collect();
    Some(Value::from(prints).to_string())
}

/// An in-toto v0.1 statement about `digest` at `name`, as cosign attest writes it.
pub fn in_toto_statement(
    name: &str,
    digest: &str,
    predicate_type: &str,
    predicate: Value,
) -> Vec<u8> {
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": predicate_type,
        "subject": [{"name": name, "digest": {algorithm: hex}}],
        "predicate": predicate,
    })
    .to_string()
    .into_bytes()
}

/// One finding of a test report: id, severity as Trivy writes it (`CRITICAL`, `HIGH`,
/// `MEDIUM`, `LOW`, `UNKNOWN`; any case accepted) and the fixed version, if any.
pub type Finding<'a> = (&'a str, &'a str, Option<&'a str>);

/// A Trivy JSON report (schema 2, `pkg/types/report.go`) of the image `artifact_name`
/// at `digest` with one OS-packages result holding `findings`. `CreatedAt` (the scan time
/// a reader takes) is fixed: set `report["CreatedAt"]` for another.
pub fn trivy_report(artifact_name: &str, digest: &str, findings: &[Finding<'_>]) -> Value {
    let repo = artifact_name.split(':').next().unwrap_or(artifact_name);
    let vulnerabilities: Vec<Value> = findings
        .iter()
        .enumerate()
        .map(|(i, (id, severity, fixed))| {
            let package = format!("pkg{i}");
            let mut v = json!({
                "VulnerabilityID": id,
                "PkgID": format!("{package}@1.0.{i}-r0"),
                "PkgName": package,
                "InstalledVersion": format!("1.0.{i}-r0"),
                "Status": if fixed.is_some() { "fixed" } else { "affected" },
                "Layer": {"DiffID": digest},
                "SeveritySource": "nvd",
                "PrimaryURL": format!("https://avd.aquasec.com/nvd/{}", id.to_ascii_lowercase()),
                "Title": format!("{id} in {package}"),
                "Severity": severity.to_ascii_uppercase(),
            });
            if let Some(f) = fixed {
                v["FixedVersion"] = Value::String((*f).to_owned());
            }
            v
        })
        .collect();
    let mut result = json!({
        "Target": format!("{artifact_name} (alpine 3.20.3)"),
        "Class": "os-pkgs",
        "Type": "alpine",
    });
    if !vulnerabilities.is_empty() {
        result["Vulnerabilities"] = Value::Array(vulnerabilities);
    }
    json!({
        "SchemaVersion": 2,
        "CreatedAt": "2026-01-15T10:00:00.000000000Z",
        "ArtifactName": artifact_name,
        "ArtifactType": "container_image",
        "Metadata": {
            "OS": {"Family": "alpine", "Name": "3.20.3"},
            "ImageID": digest,
            "RepoDigests": [format!("{repo}@{digest}")],
        },
        "Results": [result],
    })
}

/// The cosign vuln predicate (`trivy image --format cosign-vuln`): `scanner.result` is
/// `report`; scanned at `scanned_at` (RFC 3339) by Trivy `version`.
pub fn cosign_vuln_predicate(report: Value, version: &str, scanned_at: &str) -> Value {
    json!({
        "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": format!("pkg:github/aquasecurity/trivy@v{version}"),
            "version": version,
            "db": {"uri": "", "version": ""},
            "result": report,
        },
        "metadata": {"scanStartedOn": scanned_at, "scanFinishedOn": scanned_at},
    })
}

/// The in-toto `vulns` predicate (v0.1) of `findings`, by `scanner_uri` at `scanned_at`.
pub fn in_toto_vulns_predicate(
    scanner_uri: &str,
    findings: &[Finding<'_>],
    scanned_at: &str,
) -> Value {
    let result: Vec<Value> = findings
        .iter()
        .map(|(id, severity, fixed)| {
            let score = match severity.to_ascii_lowercase().as_str() {
                "critical" => "9.8",
                "high" => "7.5",
                "medium" => "5.3",
                "low" => "2.1",
                _ => "0.0",
            };
            let mut f = json!({
                "id": id,
                "severity": [{"method": "nvd", "score": score}],
            });
            if let Some(v) = fixed {
                f["annotations"] = json!([{"fixed_version": v}]);
            }
            f
        })
        .collect();
    json!({
        "scanner": {
            "uri": scanner_uri,
            "version": scanner_uri.rsplit_once('@').map(|(_, v)| v.trim_start_matches('v')).unwrap_or(""),
            "db": {"uri": "", "version": ""},
            "result": result,
        },
        "metadata": {"scanStartedOn": scanned_at, "scanFinishedOn": scanned_at},
    })
}

/// An SPDX 2.3 JSON document describing `name` with `packages` (name, version).
pub fn spdx_sbom(name: &str, packages: &[(&str, &str)]) -> Vec<u8> {
    let packages: Vec<Value> = packages
        .iter()
        .enumerate()
        .map(|(i, (n, v))| {
            json!({
                "name": n,
                "SPDXID": format!("SPDXRef-Package-{i}"),
                "versionInfo": v,
                "downloadLocation": "NOASSERTION",
                "filesAnalyzed": false,
                "licenseConcluded": "NOASSERTION",
                "externalRefs": [{
                    "referenceCategory": "PACKAGE-MANAGER",
                    "referenceType": "purl",
                    "referenceLocator": format!("pkg:apk/alpine/{n}@{v}"),
                }],
            })
        })
        .collect();
    json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": name,
        "documentNamespace": format!("https://imagelib.test/spdx/{}", name.replace([':', '/', '@'], "-")),
        "creationInfo": {"creators": ["Tool: imagelib-testkit"], "created": "2026-01-15T10:00:00Z"},
        "packages": packages,
    })
    .to_string()
    .into_bytes()
}

/// A CycloneDX 1.5 JSON BOM describing `name` with `components` (name, version).
pub fn cyclonedx_sbom(name: &str, components: &[(&str, &str)]) -> Vec<u8> {
    let components: Vec<Value> = components
        .iter()
        .map(|(n, v)| {
            json!({
                "type": "library",
                "bom-ref": format!("pkg:apk/alpine/{n}@{v}"),
                "name": n,
                "version": v,
                "purl": format!("pkg:apk/alpine/{n}@{v}"),
            })
        })
        .collect();
    json!({
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
        "version": 1,
        "metadata": {
            "timestamp": "2026-01-15T10:00:00Z",
            "tools": {"components": [{"type": "application", "name": "imagelib-testkit"}]},
            "component": {"type": "container", "name": name},
        },
        "components": components,
    })
    .to_string()
    .into_bytes()
}
