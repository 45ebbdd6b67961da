//! Real `docker-registry` processes (CNCF distribution, Debian package `docker-registry`)
//! for tests, each on its own loopback port with its own storage, killed on drop.
//!
//! A registry can require htpasswd (bcrypt) basic auth, or token auth against a token
//! server that runs inside the test process and signs JWTs (RS256, `x5c` header) with a key
//! whose self-signed certificate is the registry's `rootcertbundle`; it can serve TLS with a
//! private CA and send notifications. Test images are pushed through the registry's own
//! HTTP API, as a real client would. Keys and certificates come from the `openssl` CLI and
//! bcrypt hashes from `htpasswd` (apache2-utils); the harness needs no crypto crate.
//!
//! distribution 2.8 does not paginate `tags/list` (only `_catalog`), has no referrers API
//! and cannot delete a tag alone: tests that need those behaviours put them in front of it.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// CNCF ModelPack.
pub const MODELPACK_ARTIFACT: &str = "application/vnd.cncf.model.manifest.v1+json";
pub const MODELPACK_CONFIG: &str = "application/vnd.cncf.model.config.v1+json";
pub const MODELPACK_WEIGHT: &str = "application/vnd.cncf.model.weight.v1.raw";

const REGISTRY_BINARY: &str = "docker-registry";

/// Token auth settings: the registry trusts the harness's token server.
#[derive(Debug, Clone)]
pub struct TokenAuth {
    /// Basic credentials the token server requires; `None` issues tokens to anyone.
    pub credentials: Option<(String, String)>,
    /// The `expires_in` the token server announces.
    pub expires_in: u64,
    /// The first this many tokens (for clients under test) are already expired when issued,
    /// while their `expires_in` says otherwise: what a client sees when a token dies mid-scan.
    pub expired_tokens: usize,
    /// Whether `registry:catalog:*` is granted; without it the registry answers
    /// `insufficient_scope`.
    pub grant_catalog: bool,
    /// Answer `access_token` instead of `token` (the OAuth2 form).
    pub access_token_field: bool,
    /// The host name the registry announces in its realm instead of `127.0.0.1` (e.g.
    /// `localhost`): the same token server under another host name, as a realm on another
    /// host looks to a client.
    pub realm_host: Option<String>,
}

impl Default for TokenAuth {
    fn default() -> Self {
        TokenAuth {
            credentials: None,
            expires_in: 300,
            expired_tokens: 0,
            grant_catalog: true,
            access_token_field: false,
            realm_host: None,
        }
    }
}

/// A `notifications.endpoints` entry.
#[derive(Debug, Clone)]
pub struct NotificationEndpoint {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone)]
pub struct TestRegistryBuilder {
    htpasswd: Option<(String, String)>,
    token: Option<TokenAuth>,
    tls: bool,
    notifications: Vec<NotificationEndpoint>,
}

impl TestRegistryBuilder {
    /// Basic auth with one htpasswd (bcrypt) user.
    pub fn htpasswd(mut self, username: &str, password: &str) -> Self {
        self.htpasswd = Some((username.to_owned(), password.to_owned()));
        self
    }

    pub fn token_auth(mut self, token: TokenAuth) -> Self {
        self.token = Some(token);
        self
    }

    /// HTTPS with a certificate for 127.0.0.1 and localhost from a private CA.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    pub fn notify(mut self, url: &str, headers: &[(&str, &str)]) -> Self {
        self.notifications.push(NotificationEndpoint {
            url: url.to_owned(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        });
        self
    }

    pub async fn start(self) -> anyhow::Result<TestRegistry> {
        TestRegistry::start_with(self).await
    }
}

/// A running registry; killed, and its storage removed, on drop.
#[derive(Debug)]
pub struct TestRegistry {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    ca_pem: Option<String>,
    basic: Option<(String, String)>,
    token_server: Option<TokenServer>,
    http: reqwest::Client,
    push_tokens: Mutex<HashMap<String, String>>,
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestRegistry {
    /// An open registry over plain HTTP.
    pub async fn start() -> anyhow::Result<Self> {
        Self::builder().start().await
    }

    pub fn builder() -> TestRegistryBuilder {
        TestRegistryBuilder::default()
    }

    async fn start_with(options: TestRegistryBuilder) -> anyhow::Result<Self> {
        if which(REGISTRY_BINARY).is_none() {
            bail!(
                "`{REGISTRY_BINARY}` is not installed: apt-get install -y docker-registry apache2-utils"
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("imagelib-registry-")
            .tempdir()?;
        let mut auth_yaml = String::new();
        let mut basic = None;
        let mut token_server = None;
        if let Some((user, password)) = &options.htpasswd {
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, password])
                .output()
                .context("running htpasswd (apt-get install -y apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            let path = dir.path().join("htpasswd");
            std::fs::write(&path, &out.stdout)?;
            write!(
                auth_yaml,
                "auth:\n  htpasswd:\n    realm: {}\n    path: {}\n",
                yaml_str("imagelib-test"),
                yaml_str(&path.display().to_string())
            )?;
            basic = Some((user.clone(), password.clone()));
        }
        if let Some(token) = &options.token {
            let server = TokenServer::start(dir.path(), token.clone()).await?;
            write!(
                auth_yaml,
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(&server.realm()),
                yaml_str(TokenServer::SERVICE),
                yaml_str(TokenServer::ISSUER),
                yaml_str(&server.cert_path.display().to_string()),
            )?;
            token_server = Some(server);
        }
        let mut tls_yaml = String::new();
        let mut ca_pem = None;
        if options.tls {
            let ca = make_ca(dir.path()).await?;
            write!(
                tls_yaml,
                "  tls:\n    certificate: {}\n    key: {}\n",
                yaml_str(&ca.server_cert.display().to_string()),
                yaml_str(&ca.server_key.display().to_string())
            )?;
            ca_pem = Some(ca.ca_pem);
        }
        let mut notifications_yaml = String::new();
        if !options.notifications.is_empty() {
            notifications_yaml.push_str("notifications:\n  endpoints:\n");
            for (i, ep) in options.notifications.iter().enumerate() {
                write!(
                    notifications_yaml,
                    "    - name: endpoint{i}\n      url: {}\n      timeout: 2s\n      threshold: 3\n      backoff: 1s\n",
                    yaml_str(&ep.url)
                )?;
                if !ep.headers.is_empty() {
                    notifications_yaml.push_str("      headers:\n");
                    for (k, v) in &ep.headers {
                        writeln!(
                            notifications_yaml,
                            "        {}: [{}]",
                            yaml_str(k),
                            yaml_str(v)
                        )?;
                    }
                }
            }
        }

        let mut http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5));
        if let Some(pem) = &ca_pem {
            http = http.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        let http = http.build()?;

        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            // As distribution ships it (its `cmd/registry/config-example.yml`, Debian's
            // `/etc/docker/registry/config.yml`): blob descriptors cached in memory.
            // Without the cache every manifest and blob request stats and reads link
            // files on disk (a config blob `GET` opened ~8.6 files, not 1).
            let config = format!(
                "version: 0.1\n\
                 log:\n  level: warn\n  accesslog:\n    disabled: true\n\
                 storage:\n  cache:\n    blobdescriptor: inmemory\n  \
                 filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
                 maintenance:\n    uploadpurging:\n      enabled: false\n\
                 http:\n  addr: 127.0.0.1:{port}\n  secret: {secret}\n{tls_yaml}\
                 {auth_yaml}{notifications_yaml}",
                storage = yaml_str(&dir.path().join("data").display().to_string()),
                secret = yaml_str(&crate::unique_id()),
            );
            let config_path = dir.path().join("config.yml");
            std::fs::write(&config_path, &config)?;
            let log = std::fs::File::create(dir.path().join("registry.log"))?;
            let mut child = Command::new(REGISTRY_BINARY)
                .arg("serve")
                .arg(&config_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {REGISTRY_BINARY}"))?;
            let scheme = if ca_pem.is_some() { "https" } else { "http" };
            let url = format!("{scheme}://127.0.0.1:{port}/v2/");
            match wait_ready(&mut child, &http, &url, dir.path()).await {
                Ok(()) => {
                    return Ok(TestRegistry {
                        child,
                        dir,
                        port,
                        ca_pem,
                        basic,
                        token_server,
                        http,
                        push_tokens: Mutex::new(HashMap::new()),
                    });
                }
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("the registry did not start")))
    }

    /// The end of the registry's log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(self.dir.path())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`, the form the HTTP contract takes as a registry URL.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_tls(&self) -> bool {
        self.ca_pem.is_some()
    }

    /// `http://127.0.0.1:<port>` (or `https://`).
    pub fn base_url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The private CA's certificate, for a TLS registry.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The htpasswd user, for a basic-auth registry.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.basic.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub fn token_server(&self) -> Option<&TokenServer> {
        self.token_server.as_ref()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    async fn authorize(
        &self,
        request: reqwest::RequestBuilder,
        repository: &str,
    ) -> anyhow::Result<reqwest::RequestBuilder> {
        if let Some((u, p)) = &self.basic {
            return Ok(request.basic_auth(u, Some(p)));
        }
        let Some(server) = &self.token_server else {
            return Ok(request);
        };
        let cached = self
            .push_tokens
            .lock()
            .expect("push token lock")
            .get(repository)
            .cloned();
        let token = match cached {
            Some(t) => t,
            None => {
                let t = server.harness_token(repository).await?;
                self.push_tokens
                    .lock()
                    .expect("push token lock")
                    .insert(repository.to_owned(), t.clone());
                t
            }
        };
        Ok(request.bearer_auth(token))
    }

    /// Uploads a blob (monolithic: `POST …/blobs/uploads/`, then `PUT ?digest=`).
    pub async fn push_blob(&self, repository: &str, content: &[u8]) -> anyhow::Result<String> {
        let digest = sha256_digest(content).await?;
        let start = self
            .authorize(
                self.http.post(format!(
                    "{}/v2/{repository}/blobs/uploads/",
                    self.base_url()
                )),
                repository,
            )
            .await?
            .send()
            .await?;
        if start.status().as_u16() != 202 {
            bail!("starting an upload to {repository}: {}", start.status());
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .ok_or_else(|| anyhow!("upload without a Location"))?;
        let mut url = reqwest::Url::parse(&self.base_url())?.join(location)?;
        url.query_pairs_mut().append_pair("digest", &digest);
        let put = self
            .authorize(self.http.put(url), repository)
            .await?
            .header("content-type", "application/octet-stream")
            .body(content.to_vec())
            .send()
            .await?;
        if put.status().as_u16() != 201 {
            let status = put.status();
            bail!(
                "uploading a blob to {repository}: {status}: {}",
                put.text().await?
            );
        }
        Ok(digest)
    }

    /// Puts a manifest under a tag or digest; returns its digest.
    pub async fn push_manifest(
        &self,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> anyhow::Result<String> {
        self.put_manifest(&self.base_url(), repository, reference, media_type, body)
            .await
            .map_err(|e| e.context(format!("putting manifest {repository}:{reference}")))
    }

    /// `PUT <base>/v2/<repository>/manifests/<reference>` with this registry's credentials.
    async fn put_manifest(
        &self,
        base: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> anyhow::Result<String> {
        let response = self
            .authorize(
                self.http
                    .put(format!("{base}/v2/{repository}/manifests/{reference}")),
                repository,
            )
            .await?
            .header("content-type", media_type)
            .body(body.to_vec())
            .send()
            .await?;
        if response.status().as_u16() != 201 {
            let status = response.status();
            bail!("{status}: {}", response.text().await?);
        }
        sha256_digest(body).await
    }

    /// Pushes a single-platform image: its layers, its config (with the spec's labels) and
    /// its manifest, tagged `tag`.
    pub async fn push_image(
        &self,
        repository: &str,
        tag: &str,
        image: &ImageSpec,
    ) -> anyhow::Result<PushedManifest> {
        let pushed = self.upload_image(repository, image).await?;
        self.push_manifest(repository, tag, &pushed.media_type, pushed.raw.as_bytes())
            .await?;
        Ok(pushed)
    }

    /// Pushes each platform's image untagged, then an OCI index (or Docker manifest list
    /// when the images use Docker media types) over them, tagged `tag`.
    pub async fn push_index(
        &self,
        repository: &str,
        tag: &str,
        images: &[ImageSpec],
        annotations: &[(&str, &str)],
    ) -> anyhow::Result<PushedIndex> {
        let mut manifests = Vec::new();
        for image in images {
            let pushed = self.upload_image(repository, image).await?;
            self.push_manifest(
                repository,
                &pushed.digest,
                &pushed.media_type,
                pushed.raw.as_bytes(),
            )
            .await?;
            manifests.push(pushed);
        }
        let docker = images.first().is_some_and(|i| i.docker);
        let media_type = if docker {
            DOCKER_MANIFEST_LIST
        } else {
            OCI_INDEX
        };
        let entries: Vec<String> = manifests
            .iter()
            .zip(images)
            .map(|(m, i)| {
                format!(
                    r#"{{"mediaType":{},"digest":{},"size":{},"platform":{}}}"#,
                    json_str(&m.media_type),
                    json_str(&m.digest),
                    m.raw.len(),
                    i.platform_json()
                )
            })
            .collect();
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":{},"manifests":[{}]{}}}"#,
            json_str(media_type),
            entries.join(","),
            annotations_json(annotations)
        );
        let digest = self
            .push_manifest(repository, tag, media_type, raw.as_bytes())
            .await?;
        Ok(PushedIndex {
            digest,
            media_type: media_type.to_owned(),
            raw,
            manifests,
        })
    }

    /// Pushes an OCI artifact (e.g. a ModelPack model), tagged `tag` when given.
    pub async fn push_artifact(
        &self,
        repository: &str,
        tag: Option<&str>,
        artifact: &ArtifactSpec,
    ) -> anyhow::Result<PushedManifest> {
        let config_digest = self.push_blob(repository, &artifact.config).await?;
        let mut layers = Vec::new();
        let mut size = artifact.config.len() as u64;
        for (media_type, content) in &artifact.layers {
            let digest = self.push_blob(repository, content).await?;
            size += content.len() as u64;
            layers.push(format!(
                r#"{{"mediaType":{},"digest":{},"size":{}}}"#,
                json_str(media_type),
                json_str(&digest),
                content.len()
            ));
        }
        let artifact_type = artifact
            .artifact_type
            .as_ref()
            .map(|t| format!(r#","artifactType":{}"#, json_str(t)))
            .unwrap_or_default();
        let subject = artifact
            .subject
            .as_ref()
            .map(|s| {
                format!(
                    r#","subject":{{"mediaType":{},"digest":{},"size":{}}}"#,
                    json_str(&s.media_type),
                    json_str(&s.digest),
                    s.raw.len()
                )
            })
            .unwrap_or_default();
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":{}{artifact_type},"config":{{"mediaType":{},"digest":{},"size":{}}},"layers":[{}]{subject}{}}}"#,
            json_str(OCI_MANIFEST),
            json_str(&artifact.config_media_type),
            json_str(&config_digest),
            artifact.config.len(),
            layers.join(","),
            annotations_json(&pairs(&artifact.annotations)),
        );
        let digest = sha256_digest(raw.as_bytes()).await?;
        let reference = tag.unwrap_or(&digest).to_owned();
        self.push_manifest(repository, &reference, OCI_MANIFEST, raw.as_bytes())
            .await?;
        Ok(PushedManifest {
            digest,
            media_type: OCI_MANIFEST.to_owned(),
            raw,
            config_digest,
            size,
            artifact_type: artifact.artifact_type.clone(),
        })
    }

    /// Writes the referrers tag schema (`sha256-<hex>`): an index of `referrers` for
    /// `subject`, as clients of registries without the referrers API do.
    pub async fn push_referrers_tag(
        &self,
        repository: &str,
        subject: &str,
        referrers: &[&PushedManifest],
    ) -> anyhow::Result<String> {
        let entries: Vec<String> = referrers
            .iter()
            .map(|r| {
                let artifact_type = r
                    .artifact_type
                    .as_ref()
                    .map(|t| format!(r#","artifactType":{}"#, json_str(t)))
                    .unwrap_or_default();
                format!(
                    r#"{{"mediaType":{},"digest":{},"size":{}{artifact_type}}}"#,
                    json_str(&r.media_type),
                    json_str(&r.digest),
                    r.raw.len()
                )
            })
            .collect();
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":{},"manifests":[{}]}}"#,
            json_str(OCI_INDEX),
            entries.join(",")
        );
        self.push_manifest(
            repository,
            &subject.replacen(':', "-", 1),
            OCI_INDEX,
            raw.as_bytes(),
        )
        .await
    }

    /// A cosign-style signature: a small manifest tagged `sha256-<hex>.sig`.
    pub async fn push_cosign_signature(
        &self,
        repository: &str,
        subject: &str,
    ) -> anyhow::Result<PushedManifest> {
        let tag = format!("{}.sig", subject.replacen(':', "-", 1));
        let artifact = ArtifactSpec {
            artifact_type: None,
            config_media_type: OCI_CONFIG.to_owned(),
            config: br#"{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}"#
                .to_vec(),
            layers: vec![(
                "application/vnd.dev.cosign.simplesigning.v1+json".to_owned(),
                format!(
                    r#"{{"critical":{{"image":{{"docker-manifest-digest":{}}}}}}}"#,
                    json_str(subject)
                )
                .into_bytes(),
            )],
            annotations: Vec::new(),
            subject: None,
        };
        self.push_artifact(repository, Some(&tag), &artifact).await
    }

    /// Puts a manifest through `host` (a [`crate::referrers::ReferrersProxy`] in front of
    /// this registry, so it records referrers), with this registry's credentials; returns
    /// its digest.
    pub async fn push_manifest_via(
        &self,
        host: &str,
        repository: &str,
        reference: &str,
        media_type: &str,
        body: &[u8],
    ) -> anyhow::Result<String> {
        self.put_manifest(
            &format!("http://{host}"),
            repository,
            reference,
            media_type,
            body,
        )
        .await
        .map_err(|e| {
            e.context(format!(
                "putting manifest {repository}:{reference} via {host}"
            ))
        })
    }

    /// The raw manifest `reference` and its media type, or `None` when the registry does
    /// not have it (404).
    pub async fn try_get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<Option<(String, Vec<u8>)>> {
        let response = self
            .authorize(
                self.http.get(format!(
                    "{}/v2/{repository}/manifests/{reference}",
                    self.base_url()
                )),
                repository,
            )
            .await?
            .header(
                "accept",
                [
                    OCI_INDEX,
                    OCI_MANIFEST,
                    DOCKER_MANIFEST_LIST,
                    DOCKER_MANIFEST,
                ]
                .join(", "),
            )
            .send()
            .await?;
        if response.status().as_u16() == 404 {
            return Ok(None);
        }
        if !response.status().is_success() {
            bail!("getting {repository}:{reference}: {}", response.status());
        }
        let media_type = response
            .headers()
            .get("content-type")
            .and_then(|c| c.to_str().ok())
            .unwrap_or(OCI_MANIFEST)
            .to_owned();
        Ok(Some((media_type, response.bytes().await?.to_vec())))
    }

    /// A blob's bytes.
    pub async fn get_blob(&self, repository: &str, digest: &str) -> anyhow::Result<Vec<u8>> {
        let response = self
            .authorize(
                self.http.get(format!(
                    "{}/v2/{repository}/blobs/{digest}",
                    self.base_url()
                )),
                repository,
            )
            .await?
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("getting blob {repository}@{digest}: {}", response.status());
        }
        Ok(response.bytes().await?.to_vec())
    }

    /// Puts the manifest `source` (a tag or digest) under `tag` too.
    pub async fn tag(&self, repository: &str, source: &str, tag: &str) -> anyhow::Result<String> {
        let (media_type, body) = self.get_manifest(repository, source).await?;
        self.push_manifest(repository, tag, &media_type, &body)
            .await
    }

    /// The raw manifest `reference` and its media type.
    pub async fn get_manifest(
        &self,
        repository: &str,
        reference: &str,
    ) -> anyhow::Result<(String, Vec<u8>)> {
        self.try_get_manifest(repository, reference)
            .await?
            .ok_or_else(|| anyhow::anyhow!("getting {repository}:{reference}: 404 Not Found"))
    }

    /// Deletes a manifest by digest, and with it every tag pointing at it.
    pub async fn delete_manifest(&self, repository: &str, digest: &str) -> anyhow::Result<()> {
        let response = self
            .authorize(
                self.http.delete(format!(
                    "{}/v2/{repository}/manifests/{digest}",
                    self.base_url()
                )),
                repository,
            )
            .await?
            .send()
            .await?;
        if response.status().as_u16() != 202 {
            bail!("deleting {repository}@{digest}: {}", response.status());
        }
        Ok(())
    }

    /// Removes `tag`. distribution 2.8 cannot delete a tag alone, so this deletes the
    /// manifest it points at: every other tag on that digest goes too.
    pub async fn delete_tag(&self, repository: &str, tag: &str) -> anyhow::Result<()> {
        let (_, body) = self.get_manifest(repository, tag).await?;
        let digest = sha256_digest(&body).await?;
        self.delete_manifest(repository, &digest).await
    }

    async fn upload_image(
        &self,
        repository: &str,
        image: &ImageSpec,
    ) -> anyhow::Result<PushedManifest> {
        let layers: Vec<Vec<u8>> = if image.layers.is_empty() {
            vec![
                format!(
                    "layer of {}/{}{}",
                    image.os,
                    image.architecture,
                    image.variant_suffix()
                )
                .into_bytes(),
            ]
        } else {
            image.layers.clone()
        };
        let mut layer_entries = Vec::new();
        let mut diff_ids = Vec::new();
        let mut size = 0u64;
        let layer_type = if image.docker {
            DOCKER_LAYER
        } else {
            OCI_LAYER
        };
        for layer in &layers {
            let digest = self.push_blob(repository, layer).await?;
            size += layer.len() as u64;
            diff_ids.push(json_str(&digest));
            layer_entries.push(format!(
                r#"{{"mediaType":{},"digest":{},"size":{}}}"#,
                json_str(layer_type),
                json_str(&digest),
                layer.len()
            ));
        }
        let config = image.config_json(&diff_ids);
        let config_digest = self.push_blob(repository, config.as_bytes()).await?;
        size += config.len() as u64;
        let (media_type, config_type) = if image.docker {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        } else {
            (OCI_MANIFEST, OCI_CONFIG)
        };
        let raw = format!(
            r#"{{"schemaVersion":2,"mediaType":{},"config":{{"mediaType":{},"digest":{},"size":{}}},"layers":[{}]{}}}"#,
            json_str(media_type),
            json_str(config_type),
            json_str(&config_digest),
            config.len(),
            layer_entries.join(","),
            annotations_json(&pairs(&image.annotations)),
        );
        Ok(PushedManifest {
            digest: sha256_digest(raw.as_bytes()).await?,
            media_type: media_type.to_owned(),
            raw,
            config_digest,
            size,
            artifact_type: None,
        })
    }
}

/// Polls `url` until the registry answers anything (a 401 is an answer).
async fn wait_ready(
    child: &mut Child,
    http: &reqwest::Client,
    url: &str,
    dir: &Path,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("{REGISTRY_BINARY} exited ({status}): {}", log_tail(dir));
        }
        if http.get(url).send().await.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{REGISTRY_BINARY} did not answer on {url}: {}",
                log_tail(dir)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
    let mut start = log.len().saturating_sub(2000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// A single-platform image to push.
#[derive(Debug, Clone)]
pub struct ImageSpec {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
    pub labels: Vec<(String, String)>,
    /// Manifest annotations.
    pub annotations: Vec<(String, String)>,
    /// RFC 3339; the config's `created`.
    pub created: Option<String>,
    /// Layer contents; one small layer derived from the platform when empty.
    pub layers: Vec<Vec<u8>>,
    /// Docker schema2 media types instead of OCI.
    pub docker: bool,
}

impl ImageSpec {
    pub fn new(os: &str, architecture: &str) -> Self {
        ImageSpec {
            os: os.to_owned(),
            architecture: architecture.to_owned(),
            variant: None,
            labels: Vec::new(),
            annotations: Vec::new(),
            created: Some("2024-05-01T10:00:00Z".to_owned()),
            layers: Vec::new(),
            docker: false,
        }
    }

    pub fn linux_amd64() -> Self {
        Self::new("linux", "amd64")
    }

    pub fn variant(mut self, variant: &str) -> Self {
        self.variant = Some(variant.to_owned());
        self
    }

    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn created(mut self, created: &str) -> Self {
        self.created = Some(created.to_owned());
        self
    }

    pub fn layer(mut self, content: &[u8]) -> Self {
        self.layers.push(content.to_vec());
        self
    }

    pub fn docker(mut self) -> Self {
        self.docker = true;
        self
    }

    fn variant_suffix(&self) -> String {
        self.variant
            .as_ref()
            .map(|v| format!("/{v}"))
            .unwrap_or_default()
    }

    fn platform_json(&self) -> String {
        let variant = self
            .variant
            .as_ref()
            .map(|v| format!(r#","variant":{}"#, json_str(v)))
            .unwrap_or_default();
        format!(
            r#"{{"architecture":{},"os":{}{variant}}}"#,
            json_str(&self.architecture),
            json_str(&self.os)
        )
    }

    fn config_json(&self, diff_ids: &[String]) -> String {
        let variant = self
            .variant
            .as_ref()
            .map(|v| format!(r#","variant":{}"#, json_str(v)))
            .unwrap_or_default();
        let created = self
            .created
            .as_ref()
            .map(|c| format!(r#","created":{}"#, json_str(c)))
            .unwrap_or_default();
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
            .collect();
        format!(
            r#"{{"architecture":{},"os":{}{variant}{created},"config":{{"Labels":{{{}}}}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
            json_str(&self.architecture),
            json_str(&self.os),
            labels.join(","),
            diff_ids.join(",")
        )
    }
}

/// An OCI artifact to push.
#[derive(Debug, Clone)]
pub struct ArtifactSpec {
    pub artifact_type: Option<String>,
    pub config_media_type: String,
    pub config: Vec<u8>,
    /// (media type, content)
    pub layers: Vec<(String, Vec<u8>)>,
    pub annotations: Vec<(String, String)>,
    /// The manifest this artifact refers to.
    pub subject: Option<PushedManifest>,
}

impl ArtifactSpec {
    /// A CNCF ModelPack model with one weight layer.
    pub fn modelpack(name: &str) -> Self {
        ArtifactSpec {
            artifact_type: Some(MODELPACK_ARTIFACT.to_owned()),
            config_media_type: MODELPACK_CONFIG.to_owned(),
            config: format!(
                r#"{{"descriptor":{{"name":{},"createdAt":"2024-05-01T10:00:00Z"}},"config":{{"architecture":"transformer","format":"safetensors"}},"modelfs":{{"type":"layers","diffIds":[]}}}}"#,
                json_str(name)
            )
            .into_bytes(),
            layers: vec![(MODELPACK_WEIGHT.to_owned(), format!("weights of {name}").into_bytes())],
            annotations: vec![("org.opencontainers.image.title".to_owned(), name.to_owned())],
            subject: None,
        }
    }

    /// An artifact of `artifact_type` (a signature, an SBOM) attached to `subject`.
    pub fn referrer(artifact_type: &str, subject: &PushedManifest, content: &[u8]) -> Self {
        ArtifactSpec {
            artifact_type: Some(artifact_type.to_owned()),
            config_media_type: OCI_EMPTY.to_owned(),
            config: b"{}".to_vec(),
            layers: vec![(artifact_type.to_owned(), content.to_vec())],
            annotations: Vec::new(),
            subject: Some(subject.clone()),
        }
    }

    pub fn annotation(mut self, key: &str, value: &str) -> Self {
        self.annotations.push((key.to_owned(), value.to_owned()));
        self
    }
}

/// A pushed image manifest or artifact.
#[derive(Debug, Clone)]
pub struct PushedManifest {
    pub digest: String,
    pub media_type: String,
    /// The exact manifest bytes.
    pub raw: String,
    pub config_digest: String,
    /// Config plus layers.
    pub size: u64,
    pub artifact_type: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PushedIndex {
    pub digest: String,
    pub media_type: String,
    pub raw: String,
    /// The platform images, in the index's order.
    pub manifests: Vec<PushedManifest>,
}

impl PushedIndex {
    /// Config plus layers, summed over the platforms.
    pub fn size(&self) -> u64 {
        self.manifests.iter().map(|m| m.size).sum()
    }

    /// As a manifest, to be a referrer's subject.
    pub fn as_subject(&self) -> PushedManifest {
        PushedManifest {
            digest: self.digest.clone(),
            media_type: self.media_type.clone(),
            raw: self.raw.clone(),
            config_digest: String::new(),
            size: self.size(),
            artifact_type: None,
        }
    }
}

/// One request the token server answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRequest {
    pub service: Option<String>,
    pub scopes: Vec<String>,
    /// Whether it carried the configured basic credentials.
    pub authenticated: bool,
    /// Whether a token was issued.
    pub granted: bool,
}

/// The in-process token server of a token-auth registry.
#[derive(Debug)]
pub struct TokenServer {
    addr: SocketAddr,
    cert_path: PathBuf,
    state: Arc<TokenState>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Debug)]
struct TokenState {
    options: TokenAuth,
    key_path: PathBuf,
    cert_der_b64: String,
    expected_basic: Option<String>,
    requests: Mutex<Vec<TokenRequest>>,
    issued_to_clients: AtomicUsize,
    harness_requests: AtomicU64,
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TokenServer {
    pub const SERVICE: &'static str = "imagelib-test-registry";
    pub const ISSUER: &'static str = "imagelib-test-issuer";

    async fn start(dir: &Path, options: TokenAuth) -> anyhow::Result<Self> {
        let key_path = dir.join("token.key");
        let cert_path = dir.join("token.pem");
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            path_str(&key_path)?,
            "-out",
            path_str(&cert_path)?,
            "-days",
            "2",
            "-subj",
            "/CN=imagelib test token issuer",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,digitalSignature,keyCertSign",
        ])
        .await?;
        let der = openssl_out(
            &["x509", "-in", path_str(&cert_path)?, "-outform", "DER"],
            None,
        )
        .await?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(TokenState {
            expected_basic: options
                .credentials
                .as_ref()
                .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes(), false))),
            options,
            key_path,
            cert_der_b64: base64(&der, false),
            requests: Mutex::new(Vec::new()),
            issued_to_clients: AtomicUsize::new(0),
            harness_requests: AtomicU64::new(0),
        });
        let task = tokio::spawn(serve_tokens(listener, state.clone()));
        Ok(TokenServer {
            addr,
            cert_path,
            state,
            task,
        })
    }

    /// `http://127.0.0.1:<port>/token` (or the configured `realm_host` instead of
    /// `127.0.0.1`).
    pub fn realm(&self) -> String {
        match &self.state.options.realm_host {
            Some(host) => format!("http://{host}:{}/token", self.addr.port()),
            None => format!("http://{}/token", self.addr),
        }
    }

    /// The requests made by clients under test (the harness's own pushes are left out).
    pub fn requests(&self) -> Vec<TokenRequest> {
        self.state
            .requests
            .lock()
            .expect("token requests lock")
            .clone()
    }

    async fn harness_token(&self, repository: &str) -> anyhow::Result<String> {
        self.state.harness_requests.fetch_add(1, Ordering::Relaxed);
        let scopes = vec![format!("repository:{repository}:pull,push,delete")];
        issue_jwt(&self.state, &scopes, 300, "harness").await
    }
}

async fn serve_tokens(listener: TcpListener, state: Arc<TokenState>) {
    while let Ok((socket, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let _ = answer_token_request(socket, &state).await;
        });
    }
}

async fn answer_token_request(mut socket: TcpStream, state: &TokenState) -> anyhow::Result<()> {
    let head = read_head(&mut socket).await?;
    let mut lines = head.lines();
    let request_line = lines.next().unwrap_or_default();
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let authorization = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_owned());
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let mut service = None;
    let mut scopes = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        match k {
            "service" => service = Some(v),
            "scope" => scopes.extend(v.split(' ').filter(|s| !s.is_empty()).map(str::to_owned)),
            _ => {}
        }
    }
    let authenticated = match &state.expected_basic {
        Some(expected) => authorization.as_deref() == Some(expected.as_str()),
        None => true,
    };
    let granted = authenticated && service.as_deref() == Some(TokenServer::SERVICE);
    state
        .requests
        .lock()
        .expect("token requests lock")
        .push(TokenRequest {
            service: service.clone(),
            scopes: scopes.clone(),
            authenticated,
            granted,
        });
    let (status, body) = if granted {
        let n = state.issued_to_clients.fetch_add(1, Ordering::Relaxed);
        let lifetime: i64 = if n < state.options.expired_tokens {
            -120
        } else {
            state.options.expires_in as i64
        };
        let token = issue_jwt(state, &scopes, lifetime, "client").await?;
        let field = if state.options.access_token_field {
            "access_token"
        } else {
            "token"
        };
        (
            "200 OK",
            format!(
                r#"{{"{field}":{},"expires_in":{},"issued_at":{}}}"#,
                json_str(&token),
                state.options.expires_in,
                json_str(&rfc3339(unix_now()))
            ),
        )
    } else {
        (
            "401 Unauthorized",
            r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_owned(),
        )
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await?;
    socket.shutdown().await?;
    Ok(())
}

/// A JWT (RS256, `x5c` = the issuer certificate) granting `scopes`, expiring `lifetime`
/// seconds from now (negative: already expired beyond the registry's 60 s leeway).
async fn issue_jwt(
    state: &TokenState,
    scopes: &[String],
    lifetime: i64,
    subject: &str,
) -> anyhow::Result<String> {
    let now = unix_now() as i64;
    let access: Vec<String> = scopes
        .iter()
        .filter_map(|scope| {
            let mut parts = scope.splitn(3, ':');
            let (kind, rest) = (parts.next()?, parts.collect::<Vec<_>>());
            let (name, actions) = match rest.as_slice() {
                [name, actions] => (*name, *actions),
                _ => return None,
            };
            if kind == "registry" && !state.options.grant_catalog {
                return None;
            }
            let actions: Vec<String> = actions.split(',').map(json_str).collect();
            Some(format!(
                r#"{{"type":{},"name":{},"actions":[{}]}}"#,
                json_str(kind),
                json_str(name),
                actions.join(",")
            ))
        })
        .collect();
    let header = format!(
        r#"{{"typ":"JWT","alg":"RS256","x5c":[{}]}}"#,
        json_str(&state.cert_der_b64)
    );
    let claims = format!(
        r#"{{"iss":{},"sub":{},"aud":{},"exp":{},"nbf":{},"iat":{},"jti":{},"access":[{}]}}"#,
        json_str(TokenServer::ISSUER),
        json_str(subject),
        json_str(TokenServer::SERVICE),
        now + lifetime,
        now - 200,
        now - 200,
        json_str(&crate::unique_id()),
        access.join(",")
    );
    let signing_input = format!(
        "{}.{}",
        base64(header.as_bytes(), true),
        base64(claims.as_bytes(), true)
    );
    let signature = openssl_out(
        &["dgst", "-sha256", "-sign", path_str(&state.key_path)?],
        Some(signing_input.as_bytes()),
    )
    .await?;
    Ok(format!("{signing_input}.{}", base64(&signature, true)))
}

async fn read_head(socket: &mut TcpStream) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A private CA (its PEM) and a server certificate and key it signed, as files.
#[derive(Debug)]
pub struct TestCa {
    pub ca_pem: String,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

/// A private CA and a server certificate for 127.0.0.1 and localhost (ECDSA P-256).
pub async fn make_ca(dir: &Path) -> anyhow::Result<TestCa> {
    let ca_key = dir.join("ca.key");
    let ca_pem = dir.join("ca.pem");
    let server_key = dir.join("server.key");
    let server_csr = dir.join("server.csr");
    let server_cert = dir.join("server.pem");
    let ext = dir.join("server.ext");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        path_str(&ca_key)?,
        "-out",
        path_str(&ca_pem)?,
        "-days",
        "2",
        "-subj",
        "/CN=imagelib test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ])
    .await?;
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        path_str(&server_key)?,
        "-out",
        path_str(&server_csr)?,
        "-subj",
        "/CN=localhost",
    ])
    .await?;
    std::fs::write(
        &ext,
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )?;
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&server_csr)?,
        "-CA",
        path_str(&ca_pem)?,
        "-CAkey",
        path_str(&ca_key)?,
        "-CAcreateserial",
        "-out",
        path_str(&server_cert)?,
        "-days",
        "2",
        "-extfile",
        path_str(&ext)?,
    ])
    .await?;
    Ok(TestCa {
        ca_pem: std::fs::read_to_string(&ca_pem)?,
        server_cert,
        server_key,
    })
}

async fn openssl(args: &[&str]) -> anyhow::Result<()> {
    openssl_out(args, None).await.map(|_| ())
}

async fn openssl_out(args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    run("openssl", args, stdin).await
}

async fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> anyhow::Result<Vec<u8>> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped stdin");
        pipe.write_all(input).await?;
        drop(pipe);
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out.stdout)
}

/// `sha256:<hex>` of `content` (coreutils `sha256sum`).
pub async fn sha256_digest(content: &[u8]) -> anyhow::Result<String> {
    let out = run("sha256sum", &["-b", "-"], Some(content)).await?;
    let hex = String::from_utf8(out)?
        .split_whitespace()
        .next()
        .filter(|h| h.len() == 64)
        .ok_or_else(|| anyhow!("sha256sum printed no digest"))?
        .to_owned();
    Ok(format!("sha256:{hex}"))
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(StdListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", p.display()))
}

fn pairs(v: &[(String, String)]) -> Vec<(&str, &str)> {
    v.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

fn annotations_json(annotations: &[(&str, &str)]) -> String {
    if annotations.is_empty() {
        return String::new();
    }
    let entries: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
        .collect();
    format!(r#","annotations":{{{}}}"#, entries.join(","))
}

/// A JSON string literal (also a valid YAML double-quoted scalar).
pub fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn yaml_str(s: &str) -> String {
    json_str(s)
}

fn base64(bytes: &[u8], url_safe: bool) -> String {
    let alphabet: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%' && i + 2 < b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 3]).ok())
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'+', _) => out.push(b' '),
            (_, Some(v)) => {
                out.push(v);
                i += 2;
            }
            (c, None) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `YYYY-MM-DDTHH:MM:SSZ` from Unix seconds (civil-from-days, proleptic Gregorian).
fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(base64(b"user:pass", false), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab", false), "YWI=");
        assert_eq!(base64(b"ab", true), "YWI");
        assert_eq!(base64(&[0xfb, 0xff], true), "-_8");
        assert_eq!(
            percent_decode("repository%3Aa%2Fb%3Apull+x%"),
            "repository:a/b:pull x%"
        );
        assert_eq!(json_str("a\"b\\\n"), r#""a\"b\\\n""#);
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_714_557_600), "2024-05-01T10:00:00Z");
    }
}
