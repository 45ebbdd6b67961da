//! imagelib as real child processes (`imagelib-node`, which is `imagelib serve`) on a NATS
//! cluster, for the cluster test and the scale-out bench: each process keeps its HTTP port
//! across restarts (so a restarted one is found where it was) unless another process took
//! the port while it was down, has its own scanner instance name and log file, and shares
//! the stream, the database and the master key with the others.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How often [`Node::wait_ready`] starts a process that exits while starting.
pub const START_ATTEMPTS: u32 = 3;

/// What the process logs when its HTTP port is in use (`std::io::ErrorKind::AddrInUse`).
const PORT_TAKEN: &str = "Address already in use";

/// The admin token every process accepts.
pub const ADMIN_TOKEN: &str = "cluster-admin-token";

/// What the processes of one deployment share.
#[derive(Debug, Clone)]
pub struct Shared {
    pub database_url: String,
    pub stream: String,
    pub subject_prefix: String,
    pub replicas: usize,
    /// The master key file (the first process creates it).
    pub master_key_file: PathBuf,
    /// Further `IMAGELIB_*` settings for every process.
    pub extra: Vec<(String, String)>,
}

/// One `imagelib serve` process.
#[derive(Debug)]
pub struct Node {
    /// The scanner instance name (`IMAGELIB_SCANNER__INSTANCE`).
    pub instance: String,
    pub port: u16,
    bin: PathBuf,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    http: reqwest::Client,
}

impl Node {
    /// A process named `instance` connecting to `nats_urls` (comma-separated), not yet
    /// started; `dir` holds its gitops directory and logs.
    pub fn new(
        bin: &Path,
        instance: &str,
        nats_urls: &str,
        shared: &Shared,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let port = imagelib_testkit::registry::free_port()?;
        let dir = dir.join(instance);
        std::fs::create_dir_all(&dir)?;
        let mut env: Vec<(String, String)> = [
            ("IMAGELIB_NATS_URL", nats_urls.to_owned()),
            ("IMAGELIB_DATABASE_URL", shared.database_url.clone()),
            ("IMAGELIB_STREAM", shared.stream.clone()),
            ("IMAGELIB_SUBJECT_PREFIX", shared.subject_prefix.clone()),
            ("IMAGELIB_STREAM_REPLICAS", shared.replicas.to_string()),
            (
                "IMAGELIB_STREAM_MAX_BYTES",
                imagelib_events::bus::DEFAULT_TEST_MAX_BYTES.to_string(),
            ),
            ("IMAGELIB_HTTP_ADDR", format!("127.0.0.1:{port}")),
            (
                "IMAGELIB_MASTER_KEY_FILE",
                shared.master_key_file.display().to_string(),
            ),
            (
                "IMAGELIB_GITOPS_DIR",
                dir.join("gitops").display().to_string(),
            ),
            ("IMAGELIB_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            (
                "IMAGELIB_ALLOW_NETWORKS",
                imagelib_testkit::LOOPBACK_NETWORKS.to_owned(),
            ),
            ("IMAGELIB_SCANNER__INSTANCE", instance.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        env.extend(shared.extra.iter().cloned());
        Ok(Node {
            instance: instance.to_owned(),
            port,
            bin: bin.to_owned(),
            env,
            dir,
            child: None,
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        })
    }

    /// Listen on a fresh port from now on: while the process was down, the kernel may have
    /// handed its old one to another test's outgoing connection as a source port.
    fn move_port(&mut self) -> anyhow::Result<()> {
        let port = imagelib_testkit::registry::free_port()?;
        eprintln!(
            "{}: port {} was taken; moving to {port}",
            self.instance, self.port
        );
        self.port = port;
        for (k, v) in &mut self.env {
            if k == "IMAGELIB_HTTP_ADDR" {
                *v = format!("127.0.0.1:{port}");
            }
        }
        Ok(())
    }

    /// Start the process (its output goes to `<dir>/<instance>-<n>.log`).
    pub fn start(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = std::fs::File::create(self.log_path())?;
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear();
        for key in ["PATH", "HOME", "TMPDIR"] {
            if let Some(v) = std::env::var_os(key) {
                cmd.env(key, v);
            }
        }
        cmd.env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("info".into()),
        );
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL the process and reap it.
    pub fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    fn log_path(&self) -> PathBuf {
        self.dir
            .join(format!("{}-{}.log", self.instance, self.starts))
    }

    /// The current run's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `/readyz`: the status code and body, or `None` when nothing answers.
    pub async fn readyz(&self) -> Option<(u16, serde_json::Value)> {
        let res = self.http.get(self.url("/readyz")).send().await.ok()?;
        let status = res.status().as_u16();
        Some((status, res.json().await.unwrap_or_default()))
    }

    /// Wait until `/readyz` says ready, within `within`. A process that exits while it
    /// starts (the cluster still electing the stream's leader after a node came back) is
    /// started again, as its supervisor (compose's `restart`, a Kubernetes pod) would, at
    /// most [`START_ATTEMPTS`] times.
    pub async fn wait_ready(&mut self, within: Duration) -> anyhow::Result<serde_json::Value> {
        let deadline = Instant::now() + within;
        let mut last = None;
        let mut attempts = 1;
        while Instant::now() < deadline {
            if !self.is_running() {
                let log = self.log();
                if attempts >= START_ATTEMPTS {
                    bail!("{} exited: {}", self.instance, tail(&log, 3000));
                }
                eprintln!(
                    "{} exited while starting; starting it again: {}",
                    self.instance,
                    tail(&log, 600)
                );
                attempts += 1;
                if log.contains(PORT_TAKEN) {
                    self.move_port()?;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.start()?;
                continue;
            }
            if let Some((status, body)) = self.readyz().await {
                if status == 200 {
                    return Ok(body);
                }
                last = Some(body);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The checks that are not ready, not the whole report.
        let waiting: Vec<String> = last
            .as_ref()
            .and_then(|l| l["checks"].as_object())
            .map(|checks| {
                checks
                    .iter()
                    .filter(|(_, c)| c["ready"] != true)
                    .map(|(k, c)| format!("{k}: {}", c["detail"]))
                    .collect()
            })
            .unwrap_or_default();
        bail!("{} not ready within {within:?}: {waiting:?}", self.instance)
    }

    /// A request with the admin token: the status and the JSON body (`Null` if none).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let mut req = self
            .http
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap_or_default();
        Ok((status, serde_json::from_str(&text).unwrap_or_default()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The last `n` bytes of `s` (on a character boundary).
pub fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
