//! A running stand-in for Harbor: [`FakeHarbor`] in front of a real `docker-registry`,
//! with one private project (`ai`) readable by one robot account (a fresh secret each start),
//! whose repositories and artifacts follow whatever is pushed to the registry under `ai/`
//! (pushes go to the registry's own address, which needs no credentials). Harbor's scanner
//! is played from a manifest annotation, `io.imagelib.demo.vulnerabilities`
//! (`High=2,Medium=5`): an artifact with it has a `Success` overview with those counts, one
//! without it a clean one. The quickstart runs it (`imagelib-harbor-standin`) to show a
//! second registry type without the internet; the CLI's demo test runs it in process.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::harbor::{FakeHarbor, overview};
use crate::registry::TestRegistry;

pub const PROJECT: &str = "ai";
pub const ROBOT: &str = "robot$ai+imagelib";
const ANNOTATION: &str = "io.imagelib.demo.vulnerabilities";
const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

#[derive(Debug)]
pub struct HarborStandin {
    pub harbor: FakeHarbor,
    pub registry: TestRegistry,
    pub secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HarborStandin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HarborStandin {
    pub async fn start() -> anyhow::Result<Self> {
        let registry = TestRegistry::start().await?;
        let harbor = FakeHarbor::start(&registry).await;
        let secret = random_secret();
        harbor.robot(ROBOT, &secret, &[PROJECT]);
        harbor.project(PROJECT, false, &[]);
        let state = harbor.state_handle();
        let base = registry.base_url();
        let task = tokio::spawn(async move {
            let http = match reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
            {
                Ok(h) => h,
                Err(_) => return,
            };
            let mut known = Known::new();
            loop {
                if let Err(e) = mirror(&http, &base, &state, &mut known).await {
                    tracing::warn!(error = %e, "harbor stand-in: reading the registry");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Ok(HarborStandin {
            harbor,
            registry,
            secret,
            task,
        })
    }

    /// `{"harbor", "registry", "project", "robot", "secret"}`: what `imagelib demo
    /// --harbor-standin` reads.
    pub fn state(&self) -> serde_json::Value {
        serde_json::json!({
            "harbor": self.harbor.host(),
            "registry": self.registry.host(),
            "project": PROJECT,
            "robot": ROBOT,
            "secret": self.secret,
        })
    }
}

/// The artifacts told to the fake: (repository, digest) → tags and findings.
type Known = BTreeMap<(String, String), (Vec<String>, Option<String>)>;

/// Harbor's view of the project: its repositories and their artifacts, from the registry.
/// An artifact is told once (and again when its tags change), so its scan overview stays
/// the same between passes as Harbor's does; the repositories are told after their
/// artifacts, so a repository Harbor lists has its scan overviews.
async fn mirror(
    http: &reqwest::Client,
    base: &str,
    harbor: &crate::harbor::HarborHandle,
    known: &mut Known,
) -> anyhow::Result<()> {
    let catalog: serde_json::Value = http
        .get(format!("{base}/v2/_catalog?n=1000"))
        .send()
        .await?
        .json()
        .await?;
    let prefix = format!("{PROJECT}/");
    let repositories: Vec<String> = catalog["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r.as_str())
        .filter(|r| r.starts_with(&prefix))
        .map(str::to_owned)
        .collect();
    for repo in &repositories {
        let tags: serde_json::Value = http
            .get(format!("{base}/v2/{repo}/tags/list"))
            .send()
            .await?
            .json()
            .await?;
        let mut by_digest: BTreeMap<String, (Vec<String>, Option<String>)> = BTreeMap::new();
        for tag in tags["tags"].as_array().into_iter().flatten() {
            let Some(tag) = tag.as_str() else { continue };
            let res = http
                .get(format!("{base}/v2/{repo}/manifests/{tag}"))
                .header("accept", ACCEPT)
                .send()
                .await?;
            let Some(digest) = res
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
            else {
                continue;
            };
            let manifest: serde_json::Value = res.json().await.unwrap_or_default();
            let findings = manifest["annotations"][ANNOTATION]
                .as_str()
                .map(str::to_owned);
            let entry = by_digest.entry(digest).or_default();
            entry.0.push(tag.to_owned());
            entry.1 = entry.1.take().or(findings);
        }
        for (digest, (tags, findings)) in by_digest {
            let key = (repo.clone(), digest.clone());
            if known.get(&key) == Some(&(tags.clone(), findings.clone())) {
                continue;
            }
            known.insert(key, (tags.clone(), findings.clone()));
            let counts: Vec<(String, u64)> = findings
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter_map(|(k, v)| Some((k.trim().to_owned(), v.trim().parse().ok()?)))
                .collect();
            let counts: Vec<(&str, u64)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
            let tags: Vec<&str> = tags.iter().map(String::as_str).collect();
            harbor.artifact(repo, &digest, &tags, Some(overview("Success", &counts, 0)));
        }
    }
    let inside: Vec<&str> = repositories.iter().map(|r| &r[prefix.len()..]).collect();
    harbor.project(PROJECT, false, &inside);
    Ok(())
}

fn random_secret() -> String {
    use rand_core::RngCore as _;
    let mut bytes = [0u8; 24];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
