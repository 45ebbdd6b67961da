//! Signed images, attestations and SBOMs pushed as cosign and the OCI 1.1 referrers
//! layout store them: signatures made in Rust with the test kit's keys, pushed as
//! `sha256-<hex>.sig`/`.att` tags (cosign's default) or as manifests with a `subject`
//! through the referrers proxy (so its API lists them).
#![allow(dead_code)]

use imagelib_testkit::registry::{OCI_MANIFEST, TestRegistry, json_str};
use imagelib_testkit::signing::{TestKey, cosign_payload, dsse_envelope};

pub const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
pub const DSSE: &str = "application/vnd.dsse.envelope.v1+json";
pub const COSIGN_SIG_ARTIFACT: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
pub const EMPTY: &str = "application/vnd.oci.empty.v1+json";

/// Where a referrer goes.
#[derive(Clone, Copy)]
pub enum Layout<'a> {
    /// cosign's tags: `sha256-<hex>.sig` / `.att`.
    Tags,
    /// A manifest with a `subject`, PUT by digest through the referrers proxy at this host.
    Subject(&'a str),
}

/// A layer: media type, content, annotations.
type Layer<'a> = (&'a str, Vec<u8>, Vec<(String, String)>);

pub struct Pushed {
    pub digest: String,
}

async fn put_manifest(host: &str, repo: &str, reference: &str, body: &[u8]) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .put(format!("http://{host}/v2/{repo}/manifests/{reference}"))
        .header("content-type", OCI_MANIFEST)
        .body(body.to_vec())
        .send()
        .await?;
    anyhow::ensure!(
        r.status().as_u16() == 201,
        "PUT {repo}:{reference}: {}",
        r.status()
    );
    Ok(())
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Pushes a manifest of `layers` (media type, content, annotations) for `subject`.
async fn push_referrer(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    layout: Layout<'_>,
    artifact_type: &str,
    suffix: &str,
    layers: &[Layer<'_>],
) -> anyhow::Result<Pushed> {
    let config = b"{}";
    let config_digest = registry.push_blob(repo, config).await?;
    let mut descriptors = Vec::new();
    for (media_type, content, annotations) in layers {
        let digest = registry.push_blob(repo, content).await?;
        let annotations = if annotations.is_empty() {
            String::new()
        } else {
            let pairs: Vec<String> = annotations
                .iter()
                .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
                .collect();
            format!(r#","annotations":{{{}}}"#, pairs.join(","))
        };
        descriptors.push(format!(
            r#"{{"mediaType":{},"digest":{},"size":{}{annotations}}}"#,
            json_str(media_type),
            json_str(&digest),
            content.len()
        ));
    }
    let (subject_digest, subject_media_type, subject_size) = subject;
    let (artifact, subject_field) = match layout {
        Layout::Tags => (String::new(), String::new()),
        Layout::Subject(_) => (
            format!(r#","artifactType":{}"#, json_str(artifact_type)),
            format!(
                r#","subject":{{"mediaType":{},"digest":{},"size":{subject_size}}}"#,
                json_str(subject_media_type),
                json_str(subject_digest)
            ),
        ),
    };
    let raw = format!(
        r#"{{"schemaVersion":2,"mediaType":{}{artifact},"config":{{"mediaType":{},"digest":{},"size":2}},"layers":[{}]{subject_field}}}"#,
        json_str(OCI_MANIFEST),
        json_str(EMPTY),
        json_str(&config_digest),
        descriptors.join(","),
    );
    let digest = sha256(raw.as_bytes());
    match layout {
        Layout::Tags => {
            let tag = format!("{}.{suffix}", subject_digest.replacen(':', "-", 1));
            registry
                .push_manifest(repo, &tag, OCI_MANIFEST, raw.as_bytes())
                .await?;
        }
        Layout::Subject(host) => put_manifest(host, repo, &digest, raw.as_bytes()).await?,
    }
    Ok(Pushed { digest })
}

/// The subject of a referrer: (digest, media type, size).
pub fn subject<'a>(digest: &'a str, media_type: &'a str, raw: &str) -> (&'a str, &'a str, usize) {
    (digest, media_type, raw.len())
}

/// A cosign key signature of `signed` (the digest named in the payload) attached to
/// `subject`. `signed` differing from the subject's digest makes a signature for another
/// image.
pub async fn cosign_sign(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    signed: &str,
    key: &TestKey,
    layout: Layout<'_>,
) -> anyhow::Result<Pushed> {
    let payload = cosign_payload(&format!("{}/{repo}", registry.host()), signed);
    let signature = key.sign(&payload);
    push_referrer(
        registry,
        repo,
        subject,
        layout,
        COSIGN_SIG_ARTIFACT,
        "sig",
        &[(
            SIMPLE_SIGNING,
            payload,
            vec![("dev.cosignproject.cosign/signature".to_owned(), signature)],
        )],
    )
    .await
}

/// A keyless cosign signature of `subject` by a Fulcio-like `leaf`, with the Rekor
/// bundle of a log entry integrated at `integrated_time` (Unix seconds), in cosign's tag.
pub async fn cosign_sign_keyless(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    leaf: &imagelib_testkit::signing::TestLeaf,
    rekor: &imagelib_testkit::signing::TestRekor,
    integrated_time: i64,
) -> anyhow::Result<Pushed> {
    let payload = cosign_payload(&format!("{}/{repo}", registry.host()), subject.0);
    let signature = leaf.key.sign(&payload);
    let bundle = rekor.rekor_bundle(&payload, &signature, &leaf.cert_pem, integrated_time);
    push_referrer(
        registry,
        repo,
        subject,
        Layout::Tags,
        COSIGN_SIG_ARTIFACT,
        "sig",
        &[(
            SIMPLE_SIGNING,
            payload,
            vec![
                ("dev.cosignproject.cosign/signature".to_owned(), signature),
                (
                    "dev.sigstore.cosign/certificate".to_owned(),
                    leaf.cert_pem.clone(),
                ),
                (
                    "dev.sigstore.cosign/chain".to_owned(),
                    leaf.chain_pem.clone(),
                ),
                ("dev.sigstore.cosign/bundle".to_owned(), bundle),
            ],
        )],
    )
    .await
}

/// A cosign signature whose layer is `size` bytes of payload (for the size limit).
pub async fn oversized_signature(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    key: &TestKey,
    size: usize,
) -> anyhow::Result<Pushed> {
    let mut payload = cosign_payload("x", subject.0);
    payload.resize(size, b' ');
    let signature = key.sign(&payload);
    push_referrer(
        registry,
        repo,
        subject,
        Layout::Tags,
        COSIGN_SIG_ARTIFACT,
        "sig",
        &[(
            SIMPLE_SIGNING,
            payload,
            vec![("dev.cosignproject.cosign/signature".to_owned(), signature)],
        )],
    )
    .await
}

/// A Trivy JSON report (Trivy's published schema, version 2) with these findings
/// (id, severity, fixed version).
pub fn trivy_report(findings: &[(&str, &str, Option<&str>)]) -> serde_json::Value {
    let vulns: Vec<serde_json::Value> = findings
        .iter()
        .map(|(id, severity, fixed)| {
            let mut v = serde_json::json!({
                "VulnerabilityID": id,
                "PkgName": "openssl",
                "InstalledVersion": "3.0.1",
                "Severity": severity,
            });
            if let Some(f) = fixed {
                v["FixedVersion"] = (*f).into();
            }
            v
        })
        .collect();
    serde_json::json!({
        "SchemaVersion": 2,
        "CreatedAt": "2026-11-30T10:00:00Z",
        "ArtifactName": "app",
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}},
        "Results": [{
            "Target": "app (debian 12.5)",
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": vulns,
        }],
    })
}

/// A cosign vuln attestation (`cosign attest --type vuln` of Trivy's `cosign-vuln`
/// output), a DSSE envelope signed by `key`, attached to `subject`.
pub async fn vuln_attestation(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    report: serde_json::Value,
    scanned_at: &str,
    key: &TestKey,
    layout: Layout<'_>,
) -> anyhow::Result<Pushed> {
    let (hex_alg, hex) = subject.0.split_once(':').unwrap_or(("sha256", subject.0));
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v0.1",
        "predicateType": "https://cosign.sigstore.dev/attestation/vuln/v1",
        "subject": [{"name": format!("{}/{repo}", registry.host()), "digest": {hex_alg: hex}}],
        "predicate": {
            "invocation": {"parameters": null, "uri": "", "event_id": "", "builder.id": ""},
            "scanner": {
                "uri": "pkg:github/aquasecurity/trivy@v0.57.0",
                "version": "0.57.0",
                "db": {"uri": "", "version": "2026-11-30T06:00:00Z"},
                "result": report,
            },
            "metadata": {"scanStartedOn": scanned_at, "scanFinishedOn": scanned_at},
        },
    });
    let envelope = dsse_envelope(IN_TOTO, statement.to_string().as_bytes(), key);
    push_referrer(
        registry,
        repo,
        subject,
        layout,
        IN_TOTO,
        "att",
        &[(
            DSSE,
            envelope,
            vec![(
                "predicateType".to_owned(),
                "https://cosign.sigstore.dev/attestation/vuln/v1".to_owned(),
            )],
        )],
    )
    .await
}

/// An SPDX SBOM as an OCI artifact attached to `subject` (through the referrers proxy).
pub async fn spdx_sbom(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    host: &str,
) -> anyhow::Result<Pushed> {
    let doc = serde_json::json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": "app",
        "documentNamespace": "https://example.com/app",
        "creationInfo": {"created": "2026-11-30T10:00:00Z", "creators": ["Tool: syft-1.0"]},
        "packages": [{"name": "openssl", "SPDXID": "SPDXRef-openssl", "versionInfo": "3.0.1", "downloadLocation": "NOASSERTION"}],
    });
    push_referrer(
        registry,
        repo,
        subject,
        Layout::Subject(host),
        "application/spdx+json",
        "sbom",
        &[(
            "application/spdx+json",
            doc.to_string().into_bytes(),
            vec![],
        )],
    )
    .await
}

/// A referrer whose layers say they are a signature and an attestation but hold garbage.
pub async fn garbage(
    registry: &TestRegistry,
    repo: &str,
    subject: (&str, &str, usize),
    layout: Layout<'_>,
    suffix: &str,
) -> anyhow::Result<Pushed> {
    push_referrer(
        registry,
        repo,
        subject,
        layout,
        IN_TOTO,
        suffix,
        &[
            (DSSE, b"\x00\xffnot json at all".to_vec(), vec![]),
            (
                SIMPLE_SIGNING,
                b"{\"critical\":".to_vec(),
                vec![(
                    "dev.cosignproject.cosign/signature".to_owned(),
                    "!! not base64 !!".to_owned(),
                )],
            ),
        ],
    )
    .await
}
