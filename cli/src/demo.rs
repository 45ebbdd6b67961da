//! `imagelib demo`: fill a local registry with sample images and register it, so a
//! newcomer sees a populated Image and Model Library a minute after `scripts/run`.
//!
//! The images are tiny (a few bytes of layer each) but real OCI content, pushed through
//! the Registry HTTP API: PostgreSQL images that declare their extensions, NIM-style
//! model images (one multi-arch), an embedding model, a reranker, and a CNCF ModelPack
//! artifact. Only `scripts/run` calls it, and only against a development registry;
//! `IMAGELIB_DEMO=0 scripts/run` skips it.
//!
//! Trust is shown too, stored as cosign stores it on a registry without the referrers API
//! (`sha256-<hex>.sig|.att|.sbom` tags): the Llama NIM is signed with the demo key and has
//! a clean vulnerability attestation and an SPDX SBOM, the reranker is signed but its
//! report holds a critical CVE, the embedding NIM is unsigned. The `nim` rule enforces a
//! policy trusting the demo key with `max_severity: high`, so the Model Library shows one
//! passing and two failing images and the deploy gate refuses the failing ones. The demo
//! key is derived from a public seed: it proves nothing outside the demo.
//!
//! Tag integrity is shown too: once the first scan has read `demo/postgresql:16.4`, the
//! demo re-pushes that version with other content (a rebuilt image, as a careless CI job
//! would) and asks for a scan of the repository, which re-checks its immutable tags: the
//! scanner emits `image.tag_mutated` (found by `scan`) and the catalog marks the tag. A
//! second run pushes nothing new (the original `16.4` is pushed only when the tag is
//! absent), so it finds no second mutation.
//!
//! A second registry type is shown when `scripts/run` started the Harbor stand-in
//! (`imagelib-harbor-standin`, the test kit's fake Harbor in front of a real registry):
//! `--harbor-standin <state file>` pushes two NIM images into its project `ai` and
//! registers it as a `harbor` registry scoped to that project with its robot account, so the
//! scanner lists it through Harbor's API (Harbor refuses `_catalog` to robots) and records
//! Harbor's scan summaries (one image clean, one with two high findings).

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use clap::Args;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::{EncodePublicKey as _, LineEnding};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Body, Client};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The registry to fill and register (plain HTTP, a development registry).
    #[arg(long, default_value = "127.0.0.1:5000")]
    pub registry: String,
    /// Only push the images; do not register the registry.
    #[arg(long)]
    pub push_only: bool,
    /// Do not wait for the first scan to finish.
    #[arg(long)]
    pub no_wait: bool,
    /// The Harbor stand-in's state file (`scripts/run` starts it): also fill it and
    /// register it as a `harbor` registry.
    #[arg(long)]
    pub harbor_standin: Option<std::path::PathBuf>,
}

/// What the Harbor stand-in wrote to its state file.
#[derive(Debug, serde::Deserialize)]
struct Standin {
    harbor: String,
    registry: String,
    project: String,
    robot: String,
    secret: String,
}

/// Fills the Harbor stand-in's project and registers it (once) as a `harbor` registry.
async fn harbor(
    client: &Client,
    state: &std::path::Path,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let standin: Standin = serde_json::from_slice(&std::fs::read(state)?)?;
    let p = Pusher {
        http: reqwest::Client::new(),
        base: format!("http://{}", standin.registry),
    };
    let project = &standin.project;
    let mut pushed = Vec::new();
    for (repo, tag, model, findings) in [
        (
            "nim/llama-3.1-8b-instruct",
            "1.0.3",
            "meta/llama-3.1-8b-instruct",
            None,
        ),
        (
            "nim/mistral-7b-instruct-v0.3",
            "1.0.0",
            "mistralai/mistral-7b-instruct-v0.3",
            Some("High=2,Medium=5"),
        ),
    ] {
        let labels = map(&[
            ("com.nvidia.nim.model", model),
            ("io.imagelib.model.type", "text-completion"),
        ]);
        let mut annotations = map(&[(
            "org.opencontainers.image.description",
            "NVIDIA NIM microservice (demo, in Harbor)",
        )]);
        if let Some(f) = findings {
            annotations.insert("io.imagelib.demo.vulnerabilities", f.to_owned());
        }
        p.image(
            &format!("{project}/{repo}"),
            Some(tag),
            "amd64",
            &labels,
            &annotations,
        )
        .await?;
        pushed.push(format!("{project}/{repo}"));
    }
    wait_for_standin(&p.http, &standin, &pushed).await?;
    let url = format!("{}/{project}", standin.harbor);
    let list = client
        .send(Method::GET, "/v1/registries?limit=500", None)
        .await?;
    let existing = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["url"] == url.as_str())
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned());
    let id = match existing {
        Some(id) => id,
        None => {
            let r = client
                .send(
                    Method::POST,
                    "/v1/registries",
                    Some(Body::Json(json!({
                        "label": "Demo Harbor (stand-in)", "url": url, "registry_type": "harbor", "insecure": true,
                        "credentials": {"kind": "basic", "username": standin.robot, "password": standin.secret},
                    }))),
                )
                .await?;
            r["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    client
        .send(
            Method::PUT,
            &format!("/v1/registries/{id}/rules/harbor-nim"),
            Some(Body::Json(
                json!({"repositories": format!("{project}/nim/*"), "kind": "model",
                "description": "NIM models in Harbor", "hm_tags": ["demo", "harbor"]}),
            )),
        )
        .await?;
    let requested = client
        .send(
            Method::POST,
            &format!("/v1/registries/{id}/sync"),
            Some(Body::Json(json!({}))),
        )
        .await?;
    writeln!(
        out,
        "registered the Harbor stand-in's project `{project}` ({id}, type harbor, robot account {}); scanning through Harbor's API…",
        standin.robot
    )?;
    match crate::registry_cmd::wait_for_sync(
        client,
        &id,
        requested["sequence"].as_u64().unwrap_or(0),
        120,
    )
    .await
    {
        Ok(last) => writeln!(
            out,
            "Harbor scan {}: {} tags seen (listed through /api/v2.0, Harbor's scan summaries recorded)",
            last["state"].as_str().unwrap_or("?"),
            last["summary"]["tags_seen"]
        )?,
        Err(e) => writeln!(out, "the Harbor scan has not finished yet: {e}")?,
    }
    Ok(())
}

/// Waits (at most 15 s) until the stand-in's Harbor API lists `pushed`: it mirrors the
/// registry every half second, where a real Harbor knows a push at once, and the scan
/// that follows must find what was just pushed.
async fn wait_for_standin(
    http: &reqwest::Client,
    standin: &Standin,
    pushed: &[String],
) -> anyhow::Result<()> {
    let url = format!(
        "http://{}/api/v2.0/projects/{}/repositories?page_size=100",
        standin.harbor, standin.project
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let listed: Vec<String> = match http
            .get(&url)
            .basic_auth(&standin.robot, Some(&standin.secret))
            .send()
            .await
        {
            Ok(res) if res.status().is_success() => res
                .json::<Vec<serde_json::Value>>()
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(|r| r["name"].as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        };
        if pushed.iter().all(|p| listed.contains(p)) {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the Harbor stand-in at {} does not list {pushed:?} after 15 s (it lists {listed:?})",
            standin.harbor
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

fn sha(bytes: &[u8]) -> String {
    format!(
        "sha256:{}",
        Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

struct Pusher {
    http: reqwest::Client,
    base: String,
}

impl Pusher {
    async fn blob(&self, repo: &str, bytes: &[u8]) -> anyhow::Result<(String, usize)> {
        let digest = sha(bytes);
        let head = self
            .http
            .head(format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .send()
            .await?;
        if head.status().is_success() {
            return Ok((digest, bytes.len()));
        }
        let start = self
            .http
            .post(format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send()
            .await?;
        anyhow::ensure!(
            start.status().as_u16() == 202,
            "upload start answered {}",
            start.status()
        );
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| anyhow::anyhow!("no upload location"))?
            .to_owned();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("{}{location}", self.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let put = self
            .http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(bytes.to_vec())
            .send()
            .await?;
        anyhow::ensure!(
            put.status().as_u16() == 201,
            "blob upload answered {}",
            put.status()
        );
        Ok((digest, bytes.len()))
    }

    async fn manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        body: &Value,
    ) -> anyhow::Result<(String, usize)> {
        let bytes = serde_json::to_vec(body)?;
        let res = self
            .http
            .put(format!("{}/v2/{repo}/manifests/{reference}", self.base))
            .header("content-type", media_type)
            .body(bytes.clone())
            .send()
            .await?;
        anyhow::ensure!(
            res.status().as_u16() == 201,
            "manifest {repo}:{reference} answered {}",
            res.status()
        );
        Ok((sha(&bytes), bytes.len()))
    }

    /// A single-platform OCI image with labels (config) and annotations (manifest).
    async fn image(
        &self,
        repo: &str,
        tag: Option<&str>,
        arch: &str,
        labels: &BTreeMap<&str, String>,
        annotations: &BTreeMap<&str, String>,
    ) -> anyhow::Result<(String, usize)> {
        let layer = format!("imagelib demo layer {repo}:{} {arch}\n", tag.unwrap_or("-"));
        let (layer_digest, layer_size) = self.blob(repo, layer.as_bytes()).await?;
        let config = json!({
            "architecture": arch, "os": "linux", "created": "2026-10-01T12:00:00Z",
            "config": {"Labels": labels},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
        });
        let (config_digest, config_size) = self.blob(repo, &serde_json::to_vec(&config)?).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
            "annotations": annotations,
        });
        // Platform manifests of an index are pushed by digest, as real multi-arch
        // builds do, so the demo registry has no per-architecture tags.
        let reference = match tag {
            Some(tag) => tag.to_owned(),
            None => sha(&serde_json::to_vec(&manifest)?),
        };
        self.manifest(
            repo,
            &reference,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await
    }

    /// Whether `repo:tag` exists.
    async fn exists(&self, repo: &str, tag: &str) -> anyhow::Result<bool> {
        let res = self
            .http
            .head(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("accept", "application/vnd.oci.image.manifest.v1+json")
            .send()
            .await?;
        Ok(res.status().is_success())
    }

    async fn multi_arch(
        &self,
        repo: &str,
        tag: &str,
        labels: &BTreeMap<&str, String>,
        annotations: &BTreeMap<&str, String>,
    ) -> anyhow::Result<()> {
        let mut entries = Vec::new();
        for arch in ["amd64", "arm64"] {
            let (digest, size) = self.image(repo, None, arch, labels, annotations).await?;
            entries.push(json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size,
                                "platform": {"os": "linux", "architecture": arch}}));
        }
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries, "annotations": annotations});
        self.manifest(repo, tag, "application/vnd.oci.image.index.v1+json", &index)
            .await?;
        Ok(())
    }

    /// A CNCF ModelPack artifact.
    async fn modelpack(&self, repo: &str, tag: &str, name: &str) -> anyhow::Result<()> {
        let config = json!({"descriptor": {"name": name, "family": "granite"}, "config": {"format": "safetensors"},
                            "modelfs": {"type": "layers", "diffIds": []}});
        let (config_digest, config_size) = self.blob(repo, &serde_json::to_vec(&config)?).await?;
        let weights = format!("weights of {name}\n");
        let (layer_digest, layer_size) = self.blob(repo, weights.as_bytes()).await?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": "application/vnd.cncf.model.manifest.v1+json",
            "config": {"mediaType": "application/vnd.cncf.model.config.v1+json", "digest": config_digest, "size": config_size},
            "layers": [{"mediaType": "application/vnd.cncf.model.weight.v1.raw", "digest": layer_digest, "size": layer_size}],
            "annotations": {"org.opencontainers.image.title": name, "io.imagelib.model.type": "text-embedding"}
        });
        self.manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await?;
        Ok(())
    }
}

/// The demo signing key: a P-256 key derived from a public seed, so every run of the demo
/// signs with the same key and the `nim` rule's policy keeps trusting it.
fn demo_key() -> SigningKey {
    let mut seed = Sha256::digest(b"imagelib demo signing key (public, demo only)");
    loop {
        if let Ok(key) = SigningKey::from_slice(&seed) {
            return key;
        }
        seed = Sha256::digest(seed);
    }
}

/// The demo key's public half (PEM), as a policy names it.
pub fn demo_public_key() -> String {
    demo_key()
        .verifying_key()
        .to_public_key_pem(LineEnding::LF)
        .unwrap_or_default()
}

fn sign(msg: &[u8]) -> String {
    let sig: DerSignature = demo_key().sign(msg);
    B64.encode(sig.as_bytes())
}

impl Pusher {
    /// The digest `repo:tag` points at.
    async fn digest_of(&self, repo: &str, tag: &str) -> anyhow::Result<String> {
        let res = self
            .http
            .head(format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header(
                "accept",
                "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
            )
            .send()
            .await?;
        res.headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("{repo}:{tag} has no digest"))
    }

    /// A cosign manifest under `sha256-<hex>.<suffix>`: one layer per `(media type,
    /// content, annotations)`, the config cosign writes.
    async fn cosign_tag(
        &self,
        repo: &str,
        subject: &str,
        suffix: &str,
        layers: &[(&str, Vec<u8>, Value)],
    ) -> anyhow::Result<()> {
        let mut descriptors = Vec::new();
        let mut diff_ids = Vec::new();
        for (media_type, content, annotations) in layers {
            let (digest, size) = self.blob(repo, content).await?;
            descriptors.push(json!({"mediaType": media_type, "size": size, "digest": digest, "annotations": annotations}));
            diff_ids.push(digest);
        }
        let config = json!({"architecture": "", "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
            "rootfs": {"type": "layers", "diff_ids": diff_ids}, "config": {}});
        let (config_digest, config_size) = self.blob(repo, &serde_json::to_vec(&config)?).await?;
        let manifest = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config_size, "digest": config_digest},
            "layers": descriptors});
        let tag = format!("{}.{suffix}", subject.replacen(':', "-", 1));
        self.manifest(
            repo,
            &tag,
            "application/vnd.oci.image.manifest.v1+json",
            &manifest,
        )
        .await?;
        Ok(())
    }

    /// `cosign sign --key demo.key <repo>@<digest>`.
    async fn cosign_sign(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let host = self.base.trim_start_matches("http://");
        let payload = json!({"critical": {"identity": {"docker-reference": format!("{host}/{repo}")},
            "image": {"docker-manifest-digest": digest}, "type": "cosign container image signature"},
            "optional": null});
        let payload = serde_json::to_vec(&payload)?;
        let annotations = json!({"dev.cosignproject.cosign/signature": sign(&payload)});
        self.cosign_tag(
            repo,
            digest,
            "sig",
            &[(
                "application/vnd.dev.cosign.simplesigning.v1+json",
                payload,
                annotations,
            )],
        )
        .await
    }

    /// `trivy image --format cosign-vuln | cosign attest --type vuln`: a signed in-toto
    /// statement whose predicate carries a Trivy report with `findings` (id, severity).
    async fn cosign_attest_vulns(
        &self,
        repo: &str,
        digest: &str,
        findings: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let vulnerabilities: Vec<Value> = findings
            .iter()
            .enumerate()
            .map(|(i, (id, severity))| json!({"VulnerabilityID": id, "PkgName": format!("libdemo{i}"),
                "InstalledVersion": "1.0.0", "FixedVersion": "1.0.1", "Status": "fixed", "Severity": severity}))
            .collect();
        let report = json!({"SchemaVersion": 2, "CreatedAt": "2026-11-30T09:00:00Z",
            "ArtifactName": format!("{repo}@{digest}"), "ArtifactType": "container_image",
            "Metadata": {"OS": {"Family": "ubuntu", "Name": "22.04"}},
            "Results": [{"Target": format!("{repo} (ubuntu 22.04)"), "Class": "os-pkgs", "Type": "ubuntu",
                "Vulnerabilities": vulnerabilities}]});
        let predicate = json!({"invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
            "scanner": {"uri": "pkg:github/aquasecurity/trivy@v0.58.0", "version": "0.58.0",
                "db": {"uri": "", "version": ""}, "result": report},
            "metadata": {"scanStartedOn": "2026-11-30T09:00:00Z", "scanFinishedOn": "2026-11-30T09:00:05Z"}});
        let (algorithm, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
        let statement = json!({"_type": "https://in-toto.io/Statement/v0.1",
            "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
            "subject": [{"name": repo, "digest": {algorithm: hex}}], "predicate": predicate});
        let statement = serde_json::to_vec(&statement)?;
        let payload_type = "application/vnd.in-toto+json";
        let mut pae = format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            statement.len()
        )
        .into_bytes();
        pae.extend_from_slice(&statement);
        let envelope = json!({"payloadType": payload_type, "payload": B64.encode(&statement),
            "signatures": [{"keyid": "", "sig": sign(&pae)}]});
        let annotations = json!({"dev.cosignproject.cosign/signature": "",
            "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1"});
        self.cosign_tag(
            repo,
            digest,
            "att",
            &[(
                "application/vnd.dsse.envelope.v1+json",
                serde_json::to_vec(&envelope)?,
                annotations,
            )],
        )
        .await
    }

    /// `cosign attach sbom --type spdxjson`: an SPDX 2.3 document under the `.sbom` tag.
    async fn cosign_attach_sbom(&self, repo: &str, digest: &str) -> anyhow::Result<()> {
        let sbom = json!({"spdxVersion": "SPDX-2.3", "dataLicense": "CC0-1.0", "SPDXID": "SPDXRef-DOCUMENT",
            "name": repo, "documentNamespace": format!("https://imagelib.dev/demo/spdx/{digest}"),
            "creationInfo": {"created": "2026-11-30T09:00:00Z", "creators": ["Tool: imagelib-demo"]},
            "packages": [{"name": "python3", "SPDXID": "SPDXRef-Package-python3", "versionInfo": "3.10.12",
                "downloadLocation": "NOASSERTION"}]});
        self.cosign_tag(
            repo,
            digest,
            "sbom",
            &[("text/spdx+json", serde_json::to_vec(&sbom)?, json!({}))],
        )
        .await
    }

    /// Signs, attests and attaches as the module docs describe.
    async fn trust(&self) -> anyhow::Result<()> {
        let llama = "nvidia/nim/llama-3.1-8b-instruct";
        let digest = self.digest_of(llama, "1.0.3").await?;
        self.cosign_sign(llama, &digest).await?;
        self.cosign_attest_vulns(
            llama,
            &digest,
            &[("CVE-2026-10001", "LOW"), ("CVE-2026-10002", "MEDIUM")],
        )
        .await?;
        self.cosign_attach_sbom(llama, &digest).await?;
        let reranker = "nvidia/nim/nv-rerankqa-mistral-4b-v3";
        let digest = self.digest_of(reranker, "1.0.2").await?;
        self.cosign_sign(reranker, &digest).await?;
        self.cosign_attest_vulns(
            reranker,
            &digest,
            &[("CVE-2026-20001", "CRITICAL"), ("CVE-2026-20002", "HIGH")],
        )
        .await?;
        Ok(())
    }
}

/// Labels or annotations.
type Meta = BTreeMap<&'static str, String>;

fn map(pairs: &[(&'static str, &str)]) -> Meta {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// A demo PostgreSQL image's labels and annotations, with a `revision` label for a
/// rebuild.
fn postgres_image(title: &str, revision: Option<&str>) -> (Meta, Meta) {
    let pg_ext = r#"[{"name":"pgvector","version":"0.8.0","description":"vector similarity search"},{"name":"pg_stat_statements","version":"1.10"},{"name":"postgis","version":"3.5.0","description":"spatial types"}]"#;
    let mut labels = map(&[
        ("org.opencontainers.image.title", title),
        (
            "org.opencontainers.image.source",
            "https://github.com/cloudnative-pg/postgres-containers",
        ),
    ]);
    if let Some(r) = revision {
        labels.insert("org.opencontainers.image.revision", r.to_owned());
    }
    let ann = map(&[
        ("io.imagelib.postgres.extensions", pg_ext),
        (
            "org.opencontainers.image.description",
            "Community PostgreSQL with pgvector and PostGIS",
        ),
    ]);
    (labels, ann)
}

/// The repository and the versioned tag the demo re-pushes.
pub const REPUSHED: (&str, &str) = ("demo/postgresql", "16.4");

/// Re-pushes [`REPUSHED`] with other content (a rebuild); the digest it now has.
pub async fn repush(registry: &str) -> anyhow::Result<String> {
    let p = Pusher {
        http: reqwest::Client::new(),
        base: format!("http://{registry}"),
    };
    let (labels, ann) = postgres_image("PostgreSQL 16", Some("rebuilt"));
    let (digest, _) = p
        .image(REPUSHED.0, Some(REPUSHED.1), "amd64", &labels, &ann)
        .await?;
    Ok(digest)
}

pub async fn push(registry: &str) -> anyhow::Result<usize> {
    let p = Pusher {
        http: reqwest::Client::new(),
        base: format!("http://{registry}"),
    };
    let mut n = 0;
    for (tag, title) in [
        ("17.2", "PostgreSQL 17"),
        ("16.6", "PostgreSQL 16"),
        ("16.4", "PostgreSQL 16"),
        ("15.10", "PostgreSQL 15"),
    ] {
        // The re-pushed version keeps its rebuild on later runs (see the module docs).
        if (REPUSHED.0, tag) == REPUSHED && p.exists(REPUSHED.0, tag).await? {
            n += 1;
            continue;
        }
        let (labels, ann) = postgres_image(title, None);
        p.image("demo/postgresql", Some(tag), "amd64", &labels, &ann)
            .await?;
        n += 1;
    }
    let nim = |model: &'static str, ty: &'static str| {
        (
            map(&[
                ("com.nvidia.nim.model", model),
                ("io.imagelib.model.type", ty),
            ]),
            map(&[(
                "org.opencontainers.image.description",
                "NVIDIA NIM microservice (demo)",
            )]),
        )
    };
    let (l, a) = nim("meta/llama-3.1-8b-instruct", "text-completion");
    p.multi_arch("nvidia/nim/llama-3.1-8b-instruct", "1.0.3", &l, &a)
        .await?;
    p.multi_arch("nvidia/nim/llama-3.1-8b-instruct", "latest", &l, &a)
        .await?;
    let (l, a) = nim("nvidia/nv-embedqa-e5-v5", "text-embedding");
    p.image(
        "nvidia/nim/nv-embedqa-e5-v5",
        Some("1.1.0"),
        "amd64",
        &l,
        &a,
    )
    .await?;
    let (l, a) = nim("nvidia/nv-rerankqa-mistral-4b-v3", "reranker");
    p.image(
        "nvidia/nim/nv-rerankqa-mistral-4b-v3",
        Some("1.0.2"),
        "amd64",
        &l,
        &a,
    )
    .await?;
    p.modelpack("models/granite-embedding", "278m", "granite-embedding-278m")
        .await?;
    p.image(
        "tools/psql-client",
        Some("latest"),
        "amd64",
        &map(&[]),
        &map(&[]),
    )
    .await?;
    n += 6;
    p.trust().await?;
    Ok(n)
}

/// Re-pushes [`REPUSHED`] and scans its repository, which re-checks its versioned tags.
async fn mutate(
    client: &Client,
    registry: &str,
    id: &str,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let (repo, tag) = REPUSHED;
    repush(registry).await?;
    let requested = client
        .send(
            Method::POST,
            &format!("/v1/registries/{id}/sync"),
            Some(Body::Json(json!({"repository": repo}))),
        )
        .await?;
    match crate::registry_cmd::wait_for_sync(
        client,
        id,
        requested["sequence"].as_u64().unwrap_or(0),
        120,
    )
    .await
    {
        Ok(_) => writeln!(
            out,
            "re-pushed {repo}:{tag} with other content and scanned {repo}: a versioned tag that moved is a mutation (image.tag_mutated), marked in the catalog"
        )?,
        Err(e) => writeln!(out, "the scan of {repo} has not finished yet: {e}")?,
    }
    Ok(())
}

pub async fn run(client: &Client, args: DemoArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout();
    let pushed = push(&args.registry).await.map_err(|e| {
        anyhow::anyhow!("cannot push the demo images to {}: {e}\nIs the dev registry running? `deploy/local/up.sh` starts it.", args.registry)
    })?;
    writeln!(out, "pushed {pushed} demo images to {}", args.registry)?;
    if args.push_only {
        return Ok(());
    }
    let list = client
        .send(Method::GET, "/v1/registries?limit=500", None)
        .await?;
    let existing = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["url"] == args.registry.as_str())
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned());
    let id = match existing {
        Some(id) => id,
        None => {
            let r = client
                .send(
                    Method::POST,
                    "/v1/registries",
                    Some(Body::Json(json!({"label": "Demo registry", "url": args.registry, "registry_type": "generic", "insecure": true}))),
                )
                .await
                .map_err(|e| {
                    if e.to_string().contains("blocked") {
                        e.context(format!(
                            "the server's network guard refuses {}: loopback and private networks are denied by default. \
                             The quickstart's registry is on loopback, so start the server with \
                             IMAGELIB_ALLOW_NETWORKS=127.0.0.0/8,::1/128 (scripts/run does)",
                            args.registry
                        ))
                    } else {
                        e
                    }
                })?;
            r["id"].as_str().unwrap_or_default().to_owned()
        }
    };
    for (rule, body) in [
        (
            "postgres",
            json!({"repositories": "demo/*", "kind": "database", "description": "PostgreSQL images", "hm_tags": ["demo"]}),
        ),
        (
            "nim",
            json!({"repositories": "nvidia/nim/*", "kind": "model", "description": "NVIDIA NIM models", "hm_tags": ["demo", "gpu"],
                   "trust": {"mode": "enforce", "keys": [{"name": "imagelib-demo", "pem": demo_public_key()}], "max_severity": "high"}}),
        ),
        (
            "models",
            json!({"repositories": "models/*", "kind": "auto", "description": "Other models", "hm_tags": ["demo"]}),
        ),
    ] {
        client
            .send(
                Method::PUT,
                &format!("/v1/registries/{id}/rules/{rule}"),
                Some(Body::Json(body)),
            )
            .await?;
    }
    let requested = client
        .send(
            Method::POST,
            &format!("/v1/registries/{id}/sync"),
            Some(Body::Json(json!({}))),
        )
        .await?;
    writeln!(
        out,
        "registered the demo registry ({id}) with rules postgres, nim (trust policy: enforce, the demo key, max severity high), models; scanning…"
    )?;
    if !args.no_wait {
        match crate::registry_cmd::wait_for_sync(
            client,
            &id,
            requested["sequence"].as_u64().unwrap_or(0),
            120,
        )
        .await
        {
            Ok(last) => {
                writeln!(
                    out,
                    "scan {}: {} tags seen",
                    last["state"].as_str().unwrap_or("?"),
                    last["summary"]["tags_seen"]
                )?;
                // The scanner knows 16.4 now: a rebuild pushed under it is a mutation.
                mutate(client, &args.registry, &id, &mut out).await?;
            }
            Err(e) => writeln!(out, "the first scan has not finished yet: {e}")?,
        }
    }
    if let Some(state) = &args.harbor_standin {
        harbor(client, state, &mut out)
            .await
            .map_err(|e| e.context(format!("the Harbor stand-in ({})", state.display())))?;
    }
    match client.anonymous_reads().await {
        Some(true) => writeln!(
            out,
            "anonymous reads are on (IMAGELIB_ANONYMOUS_READ=true, as the quickstart sets it): a GET without a token reads what everyone may see"
        )?,
        Some(false) => writeln!(
            out,
            "anonymous reads are off: send a token (IMAGELIB_TOKEN, or `Authorization: Bearer …`) to read"
        )?,
        None => {}
    }
    Ok(())
}
