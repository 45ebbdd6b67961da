//! Registry notifications: which repositories a webhook says changed.
//!
//! Three payloads are understood: CNCF distribution notification envelopes, Harbor's
//! "Default" JSON and Harbor's CloudEvents (structured or binary HTTP mode). Each becomes
//! the set of repositories to rescan; pulls and other noise are ignored.
//!
//! distribution notifies every blob upload and cross-repository mount too (an image push
//! is a `push` per layer and config blob, then one for the manifest). A blob changes no
//! tag, so those events are ignored: only manifest and tag events ask for a scan. Turning
//! each blob into a scan made a push cost several scans, which held the registry's scan
//! lease while the manifest's scan waited for it.

use std::collections::BTreeSet;

use axum::http::HeaderMap;
use imagelib_events::RepositoryName;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("the body is not JSON: {0}")]
    Json(String),
    #[error(
        "unrecognised notification: expected a distribution `events` envelope, a Harbor `event_data` payload or a Harbor CloudEvent"
    )]
    Unrecognised,
    #[error("repository `{0}` in the notification is not a valid repository name")]
    Repository(String),
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
}

#[derive(Deserialize)]
struct DistributionTarget {
    #[serde(default)]
    repository: Option<String>,
    /// The object's URL: `…/v2/<name>/blobs/<digest>` for a blob.
    #[serde(default)]
    url: Option<String>,
}

impl DistributionTarget {
    /// A blob (layer or config), not a manifest or tag.
    fn is_blob(&self) -> bool {
        self.url.as_deref().is_some_and(|u| u.contains("/blobs/"))
    }
}

#[derive(Deserialize)]
struct HarborData {
    #[serde(default)]
    repository: Option<HarborRepository>,
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

fn harbor_type_changes(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    // PUSH_ARTIFACT, DELETE_ARTIFACT, harbor.artifact.pushed, harbor.artifact.deleted, …
    (t.contains("push") || t.contains("delete")) && !t.contains("pull")
}

/// The repositories a notification asks to rescan (empty when it is only pulls).
pub fn repositories(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeSet<RepositoryName>, WebhookError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Json(e.to_string()))?;
    let mut names: Vec<String> = Vec::new();
    let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());

    if value.get("events").is_some() {
        let env: DistributionEnvelope =
            serde_json::from_value(value).map_err(|e| WebhookError::Json(e.to_string()))?;
        for e in env.events {
            // `mount` is always a blob; a blob `delete` carries no URL and is kept (it
            // cannot be told from a manifest's).
            if matches!(e.action.as_str(), "push" | "delete")
                && let Some(t) = e.target
                && !t.is_blob()
                && let Some(r) = t.repository
            {
                names.push(r);
            }
        }
    } else if value.get("specversion").is_some() {
        let t = value
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or_default();
        if harbor_type_changes(t) {
            let data: HarborData =
                serde_json::from_value(value.get("data").cloned().unwrap_or_default())
                    .map_err(|e| WebhookError::Json(e.to_string()))?;
            names.extend(data.repository.and_then(|r| r.full_name()));
        }
    } else if let Some(t) = header("ce-type") {
        if harbor_type_changes(t) {
            let data: HarborData =
                serde_json::from_value(value).map_err(|e| WebhookError::Json(e.to_string()))?;
            names.extend(data.repository.and_then(|r| r.full_name()));
        }
    } else if let Some(t) = value.get("type").and_then(|t| t.as_str()) {
        if value.get("event_data").is_none() {
            return Err(WebhookError::Unrecognised);
        }
        if harbor_type_changes(t) {
            let data: HarborData =
                serde_json::from_value(value.get("event_data").cloned().unwrap_or_default())
                    .map_err(|e| WebhookError::Json(e.to_string()))?;
            names.extend(data.repository.and_then(|r| r.full_name()));
        }
    } else {
        return Err(WebhookError::Unrecognised);
    }
    names
        .into_iter()
        .map(|n| n.parse().map_err(|_| WebhookError::Repository(n)))
        .collect()
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
