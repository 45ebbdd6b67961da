//! A hostile registry: a small server speaking the Registry HTTP API v2 (`/v2/`,
//! `_catalog`, `tags/list`, manifests, blobs, a token endpoint) whose behaviour a test
//! switches at any time, to try what a broken or malicious registry can do to a client:
//! huge token lifetimes, sizes that overflow, indexes with thousands of children, endless
//! pages, a token realm on another host, `Retry-After` on every request, a full page
//! without `Link`, a transient `404` on `tags/list`.
//!
//! It runs on the fault proxy's HTTP/1.1 engine ([`crate::proxy::FaultProxy`] without an
//! upstream), so every request it receives is recorded and can be counted. Its content is
//! real: digests are the sha256 of what it serves, so a client that verifies content
//! accepts it, and only the behaviour under test is hostile.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sha2::Digest as _;

use crate::proxy::{Action, FaultProxy, Request, Response};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// What the registry does wrong (one at a time; [`Behaviour::Honest`] does nothing wrong).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Bearer auth with the token endpoint on its own host, answering an `expires_in` of
    /// `i64::MAX` seconds and an `issued_at` in year 1.
    HugeTokenLifetime,
    /// Every image's layers are `u64::MAX` bytes long, and every tag is an index of two
    /// such images whose descriptors are `u64::MAX` bytes too.
    OverflowingSizes,
    /// Every tag is an index with this many children.
    IndexChildren(usize),
    /// `tags/list` never ends: every page is full and links to another one.
    EndlessPages,
    /// Bearer auth whose realm is this URL (another host).
    ForeignRealm(String),
    /// Every request is answered `429` with `Retry-After: <secs>`.
    RetryAfterAlways(u64),
    /// Only the first request of each path is answered `429` with `Retry-After: <secs>`.
    RetryAfterOnce(u64),
    /// Listings are paged by `n` and `last`, but no page carries a `Link` header.
    FullPageWithoutLink,
    /// `tags/list` answers `404` (the repository is still there otherwise).
    TagsNotFound,
}

#[derive(Debug, Clone)]
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

#[derive(Debug, Default)]
struct Content {
    /// Repository → tag → manifest digest.
    repositories: BTreeMap<String, BTreeMap<String, String>>,
    blobs: HashMap<String, Blob>,
}

#[derive(Debug)]
struct State {
    behaviour: Behaviour,
    content: Content,
    /// Paths already answered `429` ([`Behaviour::RetryAfterOnce`]).
    limited: std::collections::HashSet<String>,
    /// The repositories a per-repository behaviour applies to (all when `None`).
    only: Option<Vec<String>>,
}

impl State {
    /// Whether the behaviour applies to `repository`.
    fn targets(&self, repository: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|r| r == repository))
    }
}

/// A running hostile registry on `127.0.0.1`, plain HTTP.
#[derive(Debug)]
pub struct HostileRegistry {
    server: FaultProxy,
    state: Arc<Mutex<State>>,
}

const TOKEN: &str = "hostile-token";

impl HostileRegistry {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            behaviour: Behaviour::Honest,
            content: Content::default(),
            limited: Default::default(),
            only: None,
        }));
        let shared = state.clone();
        let server = FaultProxy::start(None, move |req, _| {
            let mut state = shared.lock().unwrap_or_else(|e| e.into_inner());
            Action::Respond(answer(&mut state, req))
        })
        .await;
        HostileRegistry { server, state }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.server.host()
    }

    /// Behaves as `behaviour` from now on, for every repository.
    pub fn set(&self, behaviour: Behaviour) {
        let mut state = self.state();
        state.behaviour = behaviour;
        state.limited.clear();
        state.only = None;
    }

    /// Behaves as `behaviour` from now on for `repositories` only (the per-repository
    /// behaviours: sizes, index children, pages, a full page without `Link`, `404`).
    pub fn set_for(&self, behaviour: Behaviour, repositories: &[&str]) {
        let mut state = self.state();
        state.behaviour = behaviour;
        state.limited.clear();
        state.only = Some(repositories.iter().map(|r| (*r).to_owned()).collect());
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Request> {
        self.server.seen()
    }

    /// Adds `tags` to `repository`, each an image of its own (linux/amd64).
    pub fn add_tags(&self, repository: &str, tags: impl IntoIterator<Item = impl Into<String>>) {
        let mut state = self.state();
        for tag in tags {
            let tag = tag.into();
            let digest = image(&mut state.content, &format!("{repository}:{tag}"), 7);
            state
                .content
                .repositories
                .entry(repository.to_owned())
                .or_default()
                .insert(tag, digest);
        }
    }

    /// Removes a tag (the repository stays, even empty).
    pub fn remove_tag(&self, repository: &str, tag: &str) {
        if let Some(tags) = self.state().content.repositories.get_mut(repository) {
            tags.remove(tag);
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn sha256(bytes: &[u8]) -> String {
    let hash = sha2::Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

fn put(content: &mut Content, media_type: &'static str, bytes: Vec<u8>) -> String {
    let digest = sha256(&bytes);
    content
        .blobs
        .insert(digest.clone(), Blob { media_type, bytes });
    digest
}

/// An image manifest (config and one layer) whose layer claims `layer_size` bytes.
fn image_with(content: &mut Content, name: &str, layer_size: u64) -> (String, usize) {
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {"Labels": {"org.opencontainers.image.title": name}},
    })
    .to_string()
    .into_bytes();
    let config_len = config.len();
    let config_digest = put(content, OCI_CONFIG, config);
    let layer_digest = sha256(format!("layer of {name}").as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": config_len},
        "layers": [
            {"mediaType": LAYER, "digest": layer_digest, "size": layer_size},
            {"mediaType": LAYER, "digest": layer_digest, "size": layer_size},
        ],
    })
    .to_string()
    .into_bytes();
    let len = manifest.len();
    (put(content, OCI_MANIFEST, manifest), len)
}

fn image(content: &mut Content, name: &str, layer_size: u64) -> String {
    image_with(content, name, layer_size).0
}

/// An index of `children` entries pointing at images whose descriptors claim
/// `descriptor_size` bytes (their real size when `None`).
fn index(
    content: &mut Content,
    name: &str,
    children: usize,
    layer_size: u64,
    descriptor_size: Option<u64>,
) -> String {
    let (child, child_len) = image_with(content, &format!("{name} child"), layer_size);
    let size = descriptor_size.unwrap_or(child_len as u64);
    let manifests: Vec<serde_json::Value> = (0..children)
        .map(|i| {
            serde_json::json!({
                "mediaType": OCI_MANIFEST,
                "digest": child,
                "size": size,
                "platform": {"architecture": format!("arch{i}"), "os": "linux"},
            })
        })
        .collect();
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": manifests,
    })
    .to_string()
    .into_bytes();
    put(content, OCI_INDEX, body)
}

fn json(status: u16, body: serde_json::Value) -> Response {
    Response::new(
        status,
        &[("Content-Type", "application/json")],
        body.to_string(),
    )
}

fn errors(status: u16, code: &str) -> Response {
    json(
        status,
        serde_json::json!({"errors": [{"code": code, "message": code.to_lowercase()}]}),
    )
}

fn query(req: &Request) -> HashMap<String, String> {
    let q = req
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(hi), Some(lo)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One page of `all` after `last`, `n` entries (100 when absent), and the next page's
/// `Link` when there are more.
fn page(
    req: &Request,
    path: &str,
    all: Vec<String>,
    key: &str,
    link: bool,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let q = query(req);
    let n: usize = q
        .get("n")
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
        .max(1);
    let start = match q.get("last") {
        Some(last) => all.iter().position(|t| t > last).unwrap_or(all.len()),
        None => 0,
    };
    let items: Vec<String> = all.iter().skip(start).take(n).cloned().collect();
    let more = start + items.len() < all.len();
    let mut body = extra;
    body.insert(key.into(), serde_json::json!(items));
    let mut resp = json(200, serde_json::Value::Object(body));
    if link
        && more
        && let Some(last) = items.last()
    {
        resp.set_header(
            "Link",
            &format!("<{path}?n={n}&last={}>; rel=\"next\"", percent_encode(last)),
        );
    }
    resp
}

fn answer(state: &mut State, req: &Request) -> Response {
    let path = req.path().to_owned();
    match state.behaviour.clone() {
        Behaviour::RetryAfterAlways(secs) => {
            return Response::new(429, &[("Retry-After", &secs.to_string())], "slow down");
        }
        Behaviour::RetryAfterOnce(secs) if state.limited.insert(path.clone()) => {
            return Response::new(429, &[("Retry-After", &secs.to_string())], "slow down");
        }
        _ => {}
    }
    let host = req.header("host").unwrap_or("127.0.0.1").to_owned();
    // Auth, for the behaviours that use it.
    let realm = match &state.behaviour {
        Behaviour::HugeTokenLifetime => Some(format!("http://{host}/token")),
        Behaviour::ForeignRealm(realm) => Some(realm.clone()),
        _ => None,
    };
    if path == "/token" {
        return json(
            200,
            serde_json::json!({
                "token": TOKEN,
                "expires_in": i64::MAX,
                "issued_at": "0001-01-01T00:00:00Z",
            }),
        );
    }
    if let Some(realm) = realm
        && req.header("authorization") != Some(&format!("Bearer {TOKEN}"))
    {
        let mut resp = errors(401, "UNAUTHORIZED");
        resp.set_header(
            "WWW-Authenticate",
            &format!("Bearer realm=\"{realm}\",service=\"hostile\""),
        );
        return resp;
    }
    let mut resp = route(state, req, &path);
    resp.set_header("Docker-Distribution-API-Version", "registry/2.0");
    resp
}

fn route(state: &mut State, req: &Request, path: &str) -> Response {
    if path == "/v2/" || path == "/v2" {
        return json(200, serde_json::json!({}));
    }
    let repository = path
        .strip_prefix("/v2/")
        .and_then(|rest| {
            ["/tags/list", "/manifests/", "/blobs/", "/referrers/"]
                .iter()
                .find_map(|m| rest.find(m).map(|i| &rest[..i]))
        })
        .unwrap_or_default()
        .to_owned();
    let behaviour = if repository.is_empty() && state.only.is_some() {
        Behaviour::Honest
    } else if repository.is_empty() || state.targets(&repository) {
        state.behaviour.clone()
    } else {
        Behaviour::Honest
    };
    let link = behaviour != Behaviour::FullPageWithoutLink;
    if path == "/v2/_catalog" {
        let all: Vec<String> = state.content.repositories.keys().cloned().collect();
        return page(req, path, all, "repositories", link, Default::default());
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return errors(404, "NOT_FOUND");
    };
    if let Some(name) = rest.strip_suffix("/tags/list") {
        if behaviour == Behaviour::EndlessPages {
            let q = query(req);
            let n: usize = q
                .get("n")
                .and_then(|n| n.parse().ok())
                .unwrap_or(100)
                .max(1);
            let after: u64 = q
                .get("last")
                .and_then(|l| l.strip_prefix("t"))
                .and_then(|l| l.parse().ok())
                .map_or(0, |l: u64| l + 1);
            let tags: Vec<String> = (after..after + n as u64)
                .map(|i| format!("t{i:09}"))
                .collect();
            let last = tags.last().cloned().unwrap_or_default();
            let mut resp = json(200, serde_json::json!({"name": name, "tags": tags}));
            resp.set_header("Link", &format!("<{path}?n={n}&last={last}>; rel=\"next\""));
            return resp;
        }
        if behaviour == Behaviour::TagsNotFound {
            return errors(404, "NAME_UNKNOWN");
        }
        let Some(tags) = state.content.repositories.get(name) else {
            return errors(404, "NAME_UNKNOWN");
        };
        let all: Vec<String> = tags.keys().cloned().collect();
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), serde_json::json!(name));
        return page(req, path, all, "tags", link, extra);
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let Some(tags) = state.content.repositories.get(name) else {
            return errors(404, "NAME_UNKNOWN");
        };
        let digest = if reference.starts_with("sha256:") {
            reference.to_owned()
        } else {
            match tags.get(reference) {
                Some(d) => d.clone(),
                None => return errors(404, "MANIFEST_UNKNOWN"),
            }
        };
        // The hostile shapes are made per tag, on demand.
        let digest = match (&behaviour, reference.starts_with("sha256:")) {
            (Behaviour::OverflowingSizes, false) => index(
                &mut state.content,
                &format!("{name}:{reference} overflowing"),
                2,
                u64::MAX,
                Some(u64::MAX),
            ),
            (Behaviour::IndexChildren(n), false) => index(
                &mut state.content,
                &format!("{name}:{reference} wide"),
                *n,
                7,
                None,
            ),
            _ => digest,
        };
        let Some(blob) = state.content.blobs.get(&digest) else {
            return errors(404, "MANIFEST_UNKNOWN");
        };
        let len = blob.bytes.len().to_string();
        let mut resp = Response::new(
            200,
            &[
                ("Content-Type", blob.media_type),
                ("Docker-Content-Digest", &digest),
            ],
            blob.bytes.clone(),
        );
        if req.method == "HEAD" {
            resp.set_header("Content-Length", &len);
        }
        return resp;
    }
    if let Some((_, digest)) = rest.rsplit_once("/blobs/") {
        return match state.content.blobs.get(digest) {
            Some(blob) => Response::new(
                200,
                &[
                    ("Content-Type", "application/octet-stream"),
                    ("Docker-Content-Digest", digest),
                ],
                blob.bytes.clone(),
            ),
            None => errors(404, "BLOB_UNKNOWN"),
        };
    }
    errors(404, "NOT_FOUND")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_coding_round_trips() {
        for s in ["t000000001", "a b/c%d+e", "ünï"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
    }
}
