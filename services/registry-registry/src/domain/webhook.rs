//! Registry notifications: which repositories a webhook says changed, and which
//! manifests it says were pulled.
//!
//! Five payloads are understood: CNCF distribution notification envelopes, Azure Container
//! Registry's webhook (one distribution-shaped event, no envelope), Harbor's
//! "Default" JSON, Harbor's CloudEvents (structured or binary HTTP mode) and Docker Hub's
//! repository webhook (`push_data` + `repository`). Each becomes the set of repositories
//! to rescan and the pulls it reports; other noise is ignored. Docker Hub only notifies
//! pushes, and names an official image without its `library/` namespace.
//! Whether the pulls are counted is the registry's choice (`report_pulls`), made by the
//! caller: this module only reads the payload.
//!
//! A pull is a `GET` of a manifest by someone other than imagelib. distribution also
//! notifies blob reads (every layer of every pull), `HEAD` requests (a client checking
//! a tag, an image updater polling, the scanner's re-checks) and imagelib's own reads
//! (user agent `imagelib-…`): those are told apart here so that they are seen, counted
//! as ignored, and never become pulls. Harbor only notifies artifact pulls; when it
//! pulled by digest its `tag` is the digest, which is no tag.
//!
//! distribution notifies every blob upload and cross-repository mount too (an image push
//! is a `push` per layer and config blob, then one for the manifest). A blob changes no
//! tag, so those events are ignored: only manifest and tag events ask for a scan. Turning
//! each blob into a scan made a push cost several scans, which held the registry's scan
//! lease while the manifest's scan waited for it.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use imagelib_events::{Digest, RepositoryName, Tag};
use serde::Deserialize;

/// The most pulls one notification may report: more is a body no registry sends (each
/// distribution envelope carries a handful of events, each Harbor event one artifact).
pub const MAX_PULLS_PER_NOTIFICATION: usize = 1000;

/// The user-agent prefix of imagelib's own registry clients (the scanner, the deployer's
/// re-resolution): their reads are not pulls.
const OWN_USER_AGENT: &str = "imagelib-";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error(
        "unrecognised notification: expected a distribution `events` envelope, a Harbor `event_data` payload, a Harbor CloudEvent or a Docker Hub `push_data` payload"
    )]
    Unrecognised,
    #[error("repository `{0}` in the notification is not a valid repository name")]
    Repository(String),
    #[error("digest `{0}` of a pull in the notification is not a valid digest")]
    Digest(String),
    #[error("tag `{0}` of a pull in the notification is not a valid tag")]
    Tag(String),
    #[error("a pull in the notification names no digest")]
    MissingDigest,
    #[error("a pull in the notification names no repository")]
    MissingRepository,
    #[error(
        "the notification reports more than {MAX_PULLS_PER_NOTIFICATION} pulls; send them in several"
    )]
    TooManyPulls,
}

/// What a notification says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// Repositories to rescan (pushes and deletes of manifests and tags).
    pub repositories: BTreeSet<RepositoryName>,
    /// Manifest pulls, one per `GET` (or Harbor artifact pull), or why they cannot be
    /// read. Kept apart from the repositories: a registry that does not report pulls
    /// has its notifications accepted whatever their pulls look like.
    pub pulls: Result<Vec<Pull>, WebhookError>,
    /// Pull notifications that are not pulls, by why: `blob`, `head`, `own`.
    pub not_pulls: Vec<&'static str>,
}

impl Default for Notification {
    fn default() -> Self {
        Notification {
            repositories: BTreeSet::new(),
            pulls: Ok(Vec::new()),
            not_pulls: Vec::new(),
        }
    }
}

impl Notification {
    fn push_pull(&mut self, p: Result<Pull, WebhookError>) {
        match (&mut self.pulls, p) {
            (Ok(v), Ok(p)) if v.len() < MAX_PULLS_PER_NOTIFICATION => v.push(p),
            (Ok(_), Ok(_)) => self.pulls = Err(WebhookError::TooManyPulls),
            (Ok(_), Err(e)) => self.pulls = Err(e),
            (Err(_), _) => {}
        }
    }
}

/// One manifest pull, as the sender tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub repository: RepositoryName,
    pub digest: Digest,
    /// The tag it was pulled by; `None` for a pull by digest.
    pub tag: Option<Tag>,
    /// When the sender says it happened: unchecked (the counter clamps it).
    pub at: Option<DateTime<Utc>>,
}

#[derive(Deserialize)]
struct DistributionEnvelope {
    events: Vec<DistributionEvent>,
}

#[derive(Deserialize)]
struct DistributionEvent {
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: Option<DistributionTarget>,
    /// RFC 3339.
    #[serde(default)]
    timestamp: Option<serde_json::Value>,
    #[serde(default)]
    request: Option<DistributionRequest>,
}

#[derive(Deserialize)]
struct DistributionTarget {
    #[serde(default)]
    repository: Option<String>,
    /// The object's URL: `…/v2/<name>/blobs/<digest>` for a blob.
    #[serde(default)]
    url: Option<String>,
    #[serde(default, rename = "mediaType")]
    media_type: Option<String>,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct DistributionRequest {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    useragent: Option<String>,
}

impl DistributionTarget {
    /// A blob (layer or config), not a manifest or tag.
    fn is_blob(&self) -> bool {
        self.url.as_deref().is_some_and(|u| u.contains("/blobs/"))
    }

    /// A blob by its URL, or, without one, by a media type that is no manifest's.
    fn is_pulled_blob(&self) -> bool {
        match (&self.url, &self.media_type) {
            (Some(_), _) => self.is_blob(),
            (None, Some(m)) => !is_manifest_media_type(m),
            (None, None) => false,
        }
    }
}

fn is_manifest_media_type(m: &str) -> bool {
    m.contains("manifest") || m.contains("image.index")
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    repository: Option<HarborRepository>,
    #[serde(default)]
    resources: Vec<HarborResource>,
}

#[derive(Deserialize)]
struct HarborResource {
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    tag: Option<String>,
}

#[derive(Deserialize)]
struct HarborRepository {
    #[serde(default)]
    repo_full_name: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl HarborRepository {
    fn full_name(&self) -> Option<String> {
        if let Some(f) = &self.repo_full_name {
            return Some(f.clone());
        }
        match (&self.namespace, &self.name) {
            (Some(ns), Some(n)) => Some(format!("{ns}/{n}")),
            (None, Some(n)) => Some(n.clone()),
            _ => None,
        }
    }
}

/// Docker Hub's repository webhook: sent for pushes only (`push_data.tag` is the pushed
/// tag), with no header of its own and no signature.
#[derive(Deserialize)]
struct HubPush {
    repository: HubRepository,
}

#[derive(Deserialize)]
struct HubRepository {
    #[serde(default)]
    repo_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

impl HubRepository {
    /// `namespace/name`; an official image (no namespace, or `library`) under `library/`,
    /// the name the registry serves it by.
    fn full_name(self) -> Result<String, WebhookError> {
        let name = match (self.repo_name, self.namespace, self.name) {
            (Some(r), _, _) => r,
            (None, Some(ns), Some(n)) => format!("{ns}/{n}"),
            (None, None, Some(n)) => n,
            _ => return Err(WebhookError::MissingRepository),
        };
        Ok(if name.contains('/') {
            name
        } else {
            format!("library/{name}")
        })
    }
}

fn harbor_type_changes(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    // PUSH_ARTIFACT, DELETE_ARTIFACT, harbor.artifact.pushed, harbor.artifact.deleted, …
    (t.contains("push") || t.contains("delete")) && !t.contains("pull")
}

/// PULL_ARTIFACT, harbor.artifact.pulled.
fn harbor_type_pulls(t: &str) -> bool {
    t.to_ascii_lowercase().contains("pull")
}

/// The repositories a notification asks to rescan (empty when it is only pulls).
pub fn repositories(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeSet<RepositoryName>, WebhookError> {
    parse(headers, body).map(|n| n.repositories)
}

/// Everything a notification says: repositories to rescan and manifest pulls. The whole
/// body is checked before anything is returned, so a bad entry refuses the notification
/// rather than half of it.
pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Notification, WebhookError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    let mut out = Notification::default();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());

    let distribution = if value.get("events").is_some() {
        let env: DistributionEnvelope =
            serde_json::from_value(value.clone()).map_err(|e| WebhookError::Json(e.to_string()))?;
        Some(env.events)
    } else if value.get("action").is_some() && value.get("target").is_some() {
        // Azure Container Registry posts one distribution-shaped event, not an envelope.
        let event: DistributionEvent =
            serde_json::from_value(value.clone()).map_err(|e| WebhookError::Json(e.to_string()))?;
        Some(vec![event])
    } else {
        None
    };
    if let Some(events) = distribution {
        for e in events {
            match e.action.as_str() {
                // `mount` is always a blob; a blob `delete` carries no URL and is kept (it
                // cannot be told from a manifest's).
                "push" | "delete" => {
                    if let Some(t) = e.target
                        && !t.is_blob()
                        && let Some(r) = t.repository
                    {
                        names.push(r);
                    }
                }
                "pull" => {
                    let Some(t) = e.target else { continue };
                    let request = e.request.as_ref();
                    let method = request.and_then(|r| r.method.as_deref());
                    let agent = request.and_then(|r| r.useragent.as_deref());
                    if t.is_pulled_blob() {
                        out.not_pulls.push("blob");
                    } else if method.is_some_and(|m| !m.eq_ignore_ascii_case("GET")) {
                        out.not_pulls.push("head");
                    } else if agent.is_some_and(|a| a.starts_with(OWN_USER_AGENT)) {
                        out.not_pulls.push("own");
                    } else {
                        let at = e.timestamp.as_ref().and_then(rfc3339);
                        out.push_pull(pull(t.repository, t.digest, t.tag, at, false));
                    }
                }
                _ => {}
            }
        }
    } else if value.get("specversion").is_some() {
        let t = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        let changes = harbor_type_changes(t);
        let pulls = harbor_type_pulls(t);
        if changes || pulls {
            let at = value.get("time").and_then(rfc3339);
            let data = value.get("data").cloned().unwrap_or_default();
            harbor(data, changes, at, &mut names, &mut out)?;
        }
    } else if let Some(t) = header("ce-type") {
        let changes = harbor_type_changes(t);
        let pulls = harbor_type_pulls(t);
        if changes || pulls {
            let at = header("ce-time")
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            harbor(value, changes, at, &mut names, &mut out)?;
        }
    } else if value.get("push_data").is_some() {
        let hub: HubPush =
            serde_json::from_value(value).map_err(|e| WebhookError::Json(e.to_string()))?;
        names.push(hub.repository.full_name()?);
    } else if let Some(t) = value.get("type").and_then(|t| t.as_str()) {
        if value.get("event_data").is_none() {
            return Err(WebhookError::Unrecognised);
        }
        let changes = harbor_type_changes(t);
        let pulls = harbor_type_pulls(t);
        if changes || pulls {
            // Seconds since the epoch; anything else is no time at all.
            let at = value
                .get("occur_at")
                .and_then(|v| v.as_i64())
                .and_then(|s| DateTime::from_timestamp(s, 0));
            let data = value.get("event_data").cloned().unwrap_or_default();
            harbor(data, changes, at, &mut names, &mut out)?;
        }
    } else {
        return Err(WebhookError::Unrecognised);
    }
    out.repositories = names
        .into_iter()
        .map(|n| n.parse().map_err(|_| WebhookError::Repository(n)))
        .collect::<Result<_, _>>()?;
    Ok(out)
}

/// A Harbor event's repository to rescan (`changes`), or else its pulled artifacts.
/// The data of a pull that cannot be read is the pulls' error, not the notification's.
fn harbor(
    data: serde_json::Value,
    changes: bool,
    at: Option<DateTime<Utc>>,
    names: &mut Vec<String>,
    out: &mut Notification,
) -> Result<(), WebhookError> {
    let data: Result<HarborData, _> =
        serde_json::from_value(data).map_err(|e| WebhookError::Json(e.to_string()));
    if changes {
        names.extend(data?.repository.and_then(|r| r.full_name()));
        return Ok(());
    }
    let data = match data {
        Ok(d) => d,
        Err(e) => {
            out.push_pull(Err(e));
            return Ok(());
        }
    };
    let name = data.repository.and_then(|r| r.full_name());
    if data.resources.is_empty() {
        out.push_pull(Err(WebhookError::MissingDigest));
    }
    for r in data.resources {
        out.push_pull(pull(name.clone(), r.digest, r.tag, at, true));
    }
    Ok(())
}

/// A checked pull. Harbor names a pull by digest with the digest as its `tag`: that
/// (or any reference with `:` or `@`) is no tag.
fn pull(
    repository: Option<String>,
    digest: Option<String>,
    tag: Option<String>,
    at: Option<DateTime<Utc>>,
    lenient_tag: bool,
) -> Result<Pull, WebhookError> {
    let repository = repository.ok_or(WebhookError::MissingRepository)?;
    let repository = repository
        .parse()
        .map_err(|_| WebhookError::Repository(repository))?;
    let digest = digest.ok_or(WebhookError::MissingDigest)?;
    let digest = digest.parse().map_err(|_| WebhookError::Digest(digest))?;
    let tag = match tag.filter(|t| !t.is_empty()) {
        Some(t) if lenient_tag && t.contains([':', '@']) => None,
        Some(t) => Some(t.parse().map_err(|_| WebhookError::Tag(t))?),
        None => None,
    };
    Ok(Pull {
        repository,
        digest,
        tag,
        at,
    })
}

fn rfc3339(v: &serde_json::Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repos(headers: &HeaderMap, body: &str) -> Vec<String> {
        repositories(headers, body.as_bytes())
            .unwrap()
            .into_iter()
            .map(|r| r.to_string())
            .collect()
    }

    #[test]
    fn distribution_envelopes() {
        let body = r#"{"events":[
            {"id":"1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","repository":"nvidia/nim/llm","tag":"1.0","digest":"sha256:x"}},
            {"id":"2","action":"pull","target":{"repository":"ignored/pull"}},
            {"id":"3","action":"push","target":{"repository":"nvidia/nim/llm","tag":"latest"}},
            {"id":"4","action":"delete","target":{"repository":"pg/postgres"}}
        ]}"#;
        assert_eq!(
            repos(&HeaderMap::new(), body),
            ["nvidia/nim/llm", "pg/postgres"]
        );
    }

    /// What distribution 2.8 sends for `docker push` (blobs, then the manifest), a
    /// cross-repository mount and a delete, as captured from a real registry.
    #[test]
    fn distribution_blob_events_ask_for_nothing() {
        let blob = |action: &str, repo: &str| {
            format!(
                r#"{{"events":[{{"id":"b","action":"{action}","target":{{"mediaType":"application/octet-stream","size":5,"digest":"sha256:2c","length":5,"repository":"{repo}","url":"http://127.0.0.1:5000/v2/{repo}/blobs/sha256:2c"}}}}]}}"#
            )
        };
        assert!(repos(&HeaderMap::new(), &blob("push", "a/b")).is_empty());
        assert!(repos(&HeaderMap::new(), &blob("mount", "c/d")).is_empty());
        let manifest = r#"{"events":[{"id":"m","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","size":393,"digest":"sha256:8a","length":393,"repository":"a/b","url":"http://127.0.0.1:5000/v2/a/b/manifests/sha256:8a","tag":"v1"}}]}"#;
        assert_eq!(repos(&HeaderMap::new(), manifest), ["a/b"]);
        let deletes = r#"{"events":[
            {"id":"d1","action":"delete","target":{"digest":"sha256:8a","repository":"a/b"}},
            {"id":"d2","action":"delete","target":{"repository":"e/f","tag":"v1"}}
        ]}"#;
        assert_eq!(repos(&HeaderMap::new(), deletes), ["a/b", "e/f"]);
    }

    #[test]
    fn harbor_default_and_cloudevents() {
        let default = r#"{"type":"PUSH_ARTIFACT","occur_at":1,"operator":"admin",
            "event_data":{"resources":[{"digest":"sha256:x","tag":"v1"}],
            "repository":{"name":"llm","namespace":"ai","repo_full_name":"ai/llm","repo_type":"private"}}}"#;
        assert_eq!(repos(&HeaderMap::new(), default), ["ai/llm"]);
        let pull =
            r#"{"type":"PULL_ARTIFACT","event_data":{"repository":{"repo_full_name":"ai/llm"}}}"#;
        assert!(repos(&HeaderMap::new(), pull).is_empty());

        let structured = r#"{"specversion":"1.0","id":"x","source":"/projects/1/webhook/policies/1",
            "type":"harbor.artifact.pushed","datacontenttype":"application/json",
            "data":{"repository":{"name":"embed","namespace":"ai"}}}"#;
        assert_eq!(repos(&HeaderMap::new(), structured), ["ai/embed"]);

        let mut h = HeaderMap::new();
        h.insert("ce-type", "harbor.artifact.deleted".parse().unwrap());
        h.insert("ce-specversion", "1.0".parse().unwrap());
        let binary = r#"{"repository":{"repo_full_name":"ai/ocr"}}"#;
        assert_eq!(repos(&h, binary), ["ai/ocr"]);
    }

    /// What Azure Container Registry posts for a push and a delete (one event, no envelope).
    #[test]
    fn azure_container_registry_events() {
        let push = r#"{"id":"cb8c3971-9adc-488b-bdd8-43cbb4974ff5","timestamp":"2017-11-17T16:52:01.343145347Z",
            "action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "size":524,"digest":"sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d",
            "length":524,"repository":"ai/nim-llm","tag":"v1"},
            "request":{"id":"3cbb6949-7549-4fa1-86cd-a6d5451dffc7","host":"acme.azurecr.io","method":"PUT",
            "useragent":"docker/17.09.0-ce go/go1.8.3 git-commit/afdb6d4 kernel/4.10.0-27-generic os/linux arch/amd64 UpstreamClient(Docker-Client/17.09.0-ce \\(linux\\))"}}"#;
        assert_eq!(repos(&HeaderMap::new(), push), ["ai/nim-llm"]);
        let delete = r#"{"id":"x","timestamp":"2017-11-17T16:54:53.657764628Z","action":"delete",
            "target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
            "digest":"sha256:80f0d5c8786bb9e621a45ece0db56d11cdc624ad20da9fe62e9d25490f331d7d","repository":"pg/postgres"},
            "request":{"id":"y","host":"acme.azurecr.io","method":"DELETE","useragent":"python-requests/2.18.4"}}"#;
        assert_eq!(repos(&HeaderMap::new(), delete), ["pg/postgres"]);
        let chart = r#"{"action":"chart_push","target":{"repository":"charts/x"}}"#;
        assert!(repos(&HeaderMap::new(), chart).is_empty());
        assert!(
            repositories(
                &HeaderMap::new(),
                br#"{"action":"push","target":{"repository":7}}"#
            )
            .is_err()
        );
    }

    /// The payload Docker Hub documents for its repository webhooks.
    #[test]
    fn docker_hub_pushes() {
        let push = r#"{"callback_url":"https://registry.hub.docker.com/u/acme/pg/hook/2141b5bi5i5b02bec211i4eeih0242eg11000a/",
            "push_data":{"pushed_at":1417566161,"pusher":"trustedbuilder","tag":"16.4"},
            "repository":{"comment_count":0,"date_created":1417494799,"description":"","is_official":false,
            "is_private":true,"is_trusted":true,"name":"pg","namespace":"acme","owner":"acme",
            "repo_name":"acme/pg","repo_url":"https://registry.hub.docker.com/u/acme/pg/","star_count":0,"status":"Active"}}"#;
        assert_eq!(repos(&HeaderMap::new(), push), ["acme/pg"]);
        let official = r#"{"push_data":{"tag":"latest"},"repository":{"repo_name":"postgres","is_official":true}}"#;
        assert_eq!(repos(&HeaderMap::new(), official), ["library/postgres"]);
        let parts = r#"{"push_data":{},"repository":{"namespace":"acme","name":"nim"}}"#;
        assert_eq!(repos(&HeaderMap::new(), parts), ["acme/nim"]);
        for bad in [
            r#"{"push_data":{"tag":"x"}}"#,
            r#"{"push_data":{},"repository":{}}"#,
            r#"{"push_data":{},"repository":{"repo_name":"Not A Name"}}"#,
            r#"{"push_data":1,"repository":{"repo_name":7}}"#,
        ] {
            assert!(
                repositories(&HeaderMap::new(), bad.as_bytes()).is_err(),
                "{bad}"
            );
        }
        let n = parse(&HeaderMap::new(), push.as_bytes()).unwrap();
        assert_eq!(n.pulls, Ok(vec![]));
    }

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn distribution_pulls_are_manifest_gets_by_others() {
        let event = |url: &str, media: &str, tag: Option<&str>, method: &str, agent: &str| {
            let mut target = serde_json::json!({"mediaType": media, "digest": d('a'),
                "repository": "a/b", "url": url});
            if let Some(t) = tag {
                target["tag"] = serde_json::json!(t);
            }
            serde_json::json!({"action": "pull", "timestamp": "2026-12-03T18:02:55.48463312Z",
                "target": target, "request": {"method": method, "useragent": agent}})
        };
        let manifest = "http://r/v2/a/b/manifests/sha256:aa";
        let body = serde_json::json!({"events": [
            event(manifest, "application/vnd.oci.image.manifest.v1+json", Some("v1"), "GET", "docker/27"),
            event(manifest, "application/vnd.oci.image.index.v1+json", None, "GET", "containerd/1.7"),
            event(manifest, "application/vnd.oci.image.manifest.v1+json", Some("v1"), "HEAD", "flux"),
            event(manifest, "application/vnd.oci.image.manifest.v1+json", Some("v1"), "GET", "imagelib-sync-scanner/0.1"),
            event("http://r/v2/a/b/blobs/sha256:bb", "application/octet-stream", None, "GET", "docker/27"),
            {"action": "push", "target": {"repository": "c/d", "url": "http://r/v2/c/d/manifests/v1"}},
        ]});
        let n = parse(&HeaderMap::new(), body.to_string().as_bytes()).unwrap();
        let pulls = n.pulls.unwrap();
        assert_eq!(pulls.len(), 2);
        assert_eq!(pulls[0].repository.as_str(), "a/b");
        assert_eq!(pulls[0].digest.as_str(), d('a'));
        assert_eq!(pulls[0].tag.as_ref().map(|t| t.as_str()), Some("v1"));
        assert_eq!(
            pulls[0].at.map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-12-03T18:02:55.484633120+00:00")
        );
        assert_eq!(pulls[1].tag, None);
        assert_eq!(n.not_pulls, ["head", "own", "blob"]);
        assert_eq!(
            n.repositories
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>(),
            ["c/d"]
        );
    }

    #[test]
    fn harbor_pulls_by_digest_have_no_tag() {
        let body = format!(
            r#"{{"type":"PULL_ARTIFACT","occur_at":1680502372,"operator":"admin",
            "event_data":{{"resources":[{{"digest":"{a}","tag":"{a}"}},{{"digest":"{a}","tag":"3.8"}},{{"digest":"{a}"}}],
            "repository":{{"name":"alpine","namespace":"harbor","repo_full_name":"harbor/alpine"}}}}}}"#,
            a = d('a')
        );
        let n = parse(&HeaderMap::new(), body.as_bytes()).unwrap();
        let pulls = n.pulls.unwrap();
        let tags: Vec<Option<&str>> = pulls
            .iter()
            .map(|p| p.tag.as_ref().map(|t| t.as_str()))
            .collect();
        assert_eq!(tags, [None, Some("3.8"), None]);
        assert!(
            pulls
                .iter()
                .all(|p| p.repository.as_str() == "harbor/alpine")
        );
        assert_eq!(pulls[0].at.map(|t| t.timestamp()), Some(1680502372));
        assert!(n.repositories.is_empty());
    }

    #[test]
    fn bad_pulls_are_the_pulls_error_only() {
        let bad = r#"{"events":[{"action":"pull","target":{"repository":"a/b","digest":"sha256:short","url":"http://r/v2/a/b/manifests/x"}},
            {"action":"push","target":{"repository":"a/b","url":"http://r/v2/a/b/manifests/v1"}}]}"#;
        let n = parse(&HeaderMap::new(), bad.as_bytes()).unwrap();
        assert!(matches!(n.pulls, Err(WebhookError::Digest(_))));
        assert_eq!(n.repositories.len(), 1);
        let many = serde_json::json!({"events": (0..=MAX_PULLS_PER_NOTIFICATION).map(|_| serde_json::json!(
            {"action": "pull", "target": {"repository": "a/b", "digest": d('a')}})).collect::<Vec<_>>()});
        let n = parse(&HeaderMap::new(), many.to_string().as_bytes()).unwrap();
        assert_eq!(n.pulls, Err(WebhookError::TooManyPulls));
    }

    #[test]
    fn bad_payloads() {
        assert!(matches!(
            repositories(&HeaderMap::new(), b"nope"),
            Err(WebhookError::Json(_))
        ));
        assert!(matches!(
            repositories(&HeaderMap::new(), b"{\"hello\":1}"),
            Err(WebhookError::Unrecognised)
        ));
        assert!(matches!(
            repositories(
                &HeaderMap::new(),
                br#"{"events":[{"action":"push","target":{"repository":"Bad Name"}}]}"#
            ),
            Err(WebhookError::Repository(_))
        ));
    }
}
