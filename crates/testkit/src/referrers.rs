//! An OCI 1.1 referrers API in front of a real `docker-registry`, which (distribution 2.8)
//! has none: `GET /v2/<name>/referrers/<digest>` as the distribution spec's "Listing
//! Referrers" describes it; every other request is forwarded unchanged.
//!
//! It finds referrers from a record of the manifests pushed *through it* that carry a
//! `subject`, kept once the registry accepted them (`201`). Reading the registry instead
//! would need every manifest of the repository, which tags list cannot give (a referrer is
//! often untagged). So a test pushes its referrer manifests through [`ReferrersProxy::host`].
//!
//! As the spec says: an unknown subject digest answers `200` with an empty index (a
//! malformed one `400`); a referrer pushed through it gets `OCI-Subject` in the answer; the
//! `artifactType` filter is applied and announced with `OCI-Filters-Applied`; a list longer
//! than the page size continues through a `Link: <…>; rel="next"` header.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use crate::proxy::{Action, FaultProxy, Request, Response};

use crate::registry::OCI_INDEX;

/// (repository, subject digest) → referrer descriptors, in push order.
type Record = BTreeMap<(String, String), Vec<serde_json::Value>>;

#[derive(Debug)]
pub struct ReferrersProxy {
    proxy: FaultProxy,
}

impl ReferrersProxy {
    /// In front of the registry at `upstream`; at most `page_size` descriptors per answer.
    pub async fn start(upstream: SocketAddr, page_size: usize) -> Self {
        Self::start_with(upstream, page_size, true).await
    }

    /// A registry that ignores the `artifactType` filter (the spec allows it): every
    /// referrer is listed and `OCI-Filters-Applied` is never sent, so clients must filter.
    pub async fn start_unfiltered(upstream: SocketAddr, page_size: usize) -> Self {
        Self::start_with(upstream, page_size, false).await
    }

    async fn start_with(upstream: SocketAddr, page_size: usize, filters: bool) -> Self {
        let record: Arc<Mutex<Record>> = Arc::default();
        let page_size = page_size.max(1);
        let proxy = FaultProxy::start(Some(upstream), move |req, _| {
            rule(req, &record, page_size, filters)
        })
        .await;
        ReferrersProxy { proxy }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.proxy.host()
    }

    /// Every request the proxy received.
    pub fn seen(&self) -> Vec<Request> {
        self.proxy.seen()
    }
}

fn rule(req: &Request, record: &Arc<Mutex<Record>>, page_size: usize, filters: bool) -> Action {
    let path = req.path();
    let Some(rest) = path.strip_prefix("/v2/") else {
        return Action::Forward;
    };
    if req.method == "GET"
        && let Some((name, digest)) = rest.rsplit_once("/referrers/")
    {
        if !valid_digest(digest) {
            let body = r#"{"errors":[{"code":"DIGEST_INVALID","message":"invalid digest"}]}"#;
            return Action::Respond(Response::new(
                400,
                &[("Content-Type", "application/json")],
                body,
            ));
        }
        return Action::Respond(list(req, record, name, digest, page_size, filters));
    }
    if req.method == "PUT"
        && let Some((name, _)) = rest.rsplit_once("/manifests/")
        && let Some((subject, descriptor)) = referrer_of(req)
    {
        let key = (name.to_owned(), subject);
        let record = record.clone();
        return Action::Rewrite(Box::new(move |mut response: Response| {
            if response.status == 201 {
                // What tells a client (ORAS, notation, cosign) that the registry indexed
                // the subject, so it must not write the referrers tag schema itself.
                response.set_header("OCI-Subject", &key.1);
                let mut record = record.lock().unwrap();
                let list = record.entry(key).or_default();
                if !list.contains(&descriptor) {
                    list.push(descriptor);
                }
            }
            response
        }));
    }
    Action::Forward
}

/// The subject digest and the referrers descriptor of a manifest PUT, if it has a subject.
fn referrer_of(req: &Request) -> Option<(String, serde_json::Value)> {
    let manifest: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    let subject = manifest["subject"]["digest"].as_str()?.to_owned();
    let media_type = manifest["mediaType"]
        .as_str()
        .or_else(|| req.header("content-type"))?
        .to_owned();
    // An index has no config: without its own `artifactType` the field is left out.
    let artifact_type = manifest["artifactType"]
        .as_str()
        .or_else(|| manifest["config"]["mediaType"].as_str());
    let digest = format!("sha256:{:x}", Sha256::digest(&req.body));
    let mut descriptor = serde_json::json!({
        "mediaType": media_type,
        "digest": digest,
        "size": req.body.len(),
    });
    if let Some(t) = artifact_type {
        descriptor["artifactType"] = t.into();
    }
    if let Some(annotations) = manifest.get("annotations").filter(|a| a.is_object()) {
        descriptor["annotations"] = annotations.clone();
    }
    Some((subject, descriptor))
}

fn list(
    req: &Request,
    record: &Arc<Mutex<Record>>,
    name: &str,
    digest: &str,
    page_size: usize,
    filters: bool,
) -> Response {
    let query: Vec<(&str, &str)> = req
        .target
        .split_once('?')
        .map(|(_, q)| q.split('&').filter_map(|kv| kv.split_once('=')).collect())
        .unwrap_or_default();
    let param = |k: &str| query.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let artifact_type = param("artifactType")
        .filter(|_| filters)
        .map(percent_decode);
    let start: usize = param("page").and_then(|p| p.parse().ok()).unwrap_or(0);
    let all: Vec<serde_json::Value> = record
        .lock()
        .unwrap()
        .get(&(name.to_owned(), digest.to_owned()))
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|d| {
            artifact_type
                .as_deref()
                .is_none_or(|t| d["artifactType"] == t)
        })
        .collect();
    let page: Vec<_> = all.iter().skip(start).take(page_size).cloned().collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": page,
    });
    let mut response = Response::new(200, &[("Content-Type", OCI_INDEX)], body.to_string());
    if artifact_type.is_some() {
        response.set_header("OCI-Filters-Applied", "artifactType");
    }
    if start + page_size < all.len() {
        let mut next = format!("/v2/{name}/referrers/{digest}?page={}", start + page_size);
        if let Some(t) = param("artifactType") {
            next.push_str(&format!("&artifactType={t}"));
        }
        response.set_header("Link", &format!("<{next}>; rel=\"next\""));
    }
    response
}

/// `algorithm:encoded` as the OCI image spec's digest grammar has it.
fn valid_digest(digest: &str) -> bool {
    let Some((algorithm, encoded)) = digest.split_once(':') else {
        return false;
    };
    !algorithm.is_empty()
        && algorithm
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+._-".contains(&b))
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"=_-".contains(&b))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
