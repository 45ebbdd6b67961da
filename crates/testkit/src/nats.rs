//! A private `nats-server` process per test: a free loopback port, a temporary store
//! directory, JetStream on, and the accounts block the test passes (the output of
//! `imagelib nats config`), optionally behind TLS with a private CA. Killed on drop.
//!
//! The shared dev server has no authentication, so the tests of the closed event log need
//! servers of their own that run exactly the shipped authorization configuration.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};

/// A running nats-server.
#[derive(Debug)]
pub struct NatsServer {
    child: Child,
    pub port: u16,
    /// `nats://127.0.0.1:<port>` (no credentials).
    pub url: String,
    dir: tempfile::TempDir,
    ca_file: Option<PathBuf>,
}

/// The nats-server binary: `IMAGELIB_TEST_NATS_SERVER`, else `nats-server` on the PATH,
/// else Debian's `/usr/sbin/nats-server`.
pub fn nats_server_bin() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("IMAGELIB_TEST_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    on_path
        .or_else(|| Some(PathBuf::from("/usr/sbin/nats-server")).filter(|p| p.is_file()))
        .ok_or_else(|| anyhow!("nats-server not found (deploy/local/up.sh installs it)"))
}

/// Check a complete server configuration with `nats-server -t` (parse and validate only).
pub fn check_config(config_file: &Path) -> anyhow::Result<()> {
    let out = Command::new(nats_server_bin()?)
        .arg("-t")
        .arg("-c")
        .arg(config_file)
        .output()
        .context("running nats-server -t")?;
    if !out.status.success() {
        bail!(
            "nats-server -t -c {}: {}{}",
            config_file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

impl NatsServer {
    /// A server with `accounts` (a nats-server `accounts { … }` block) on plain TCP.
    pub async fn start(accounts: &str) -> anyhow::Result<Self> {
        Self::start_with(accounts, false).await
    }

    /// The same behind TLS: the server's certificate (for 127.0.0.1 and localhost) is
    /// signed by a private CA, written to [`NatsServer::ca_file`].
    pub async fn start_tls(accounts: &str) -> anyhow::Result<Self> {
        Self::start_with(accounts, true).await
    }

    async fn start_with(accounts: &str, tls: bool) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let port = crate::registry::free_port()?;
        std::fs::write(dir.path().join("auth.conf"), accounts)?;
        let mut conf = format!(
            "listen: \"127.0.0.1:{port}\"\n\
             jetstream {{\n  store_dir: {}\n  max_file_store: 2GB\n  max_memory_store: 64MB\n}}\n\
             include ./auth.conf\n",
            quote(&dir.path().join("js"))
        );
        let mut ca_file = None;
        if tls {
            let ca = crate::registry::make_ca(dir.path()).await?;
            let path = dir.path().join("nats-ca.pem");
            std::fs::write(&path, &ca.ca_pem)?;
            conf.push_str(&format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  timeout: 2\n}}\n",
                quote(&ca.server_cert),
                quote(&ca.server_key)
            ));
            ca_file = Some(path);
        }
        let conf_path = dir.path().join("nats-server.conf");
        std::fs::write(&conf_path, conf)?;
        check_config(&conf_path)?;
        let log = dir.path().join("nats.log");
        let child = Command::new(nats_server_bin()?)
            .arg("-c")
            .arg(&conf_path)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        let mut server = NatsServer {
            child,
            port,
            url: format!("nats://127.0.0.1:{port}"),
            dir,
            ca_file,
        };
        server.wait_listening(&log).await?;
        Ok(server)
    }

    async fn wait_listening(&mut self, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "nats-server exited ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            let ready = std::fs::read_to_string(log)
                .map(|l| l.contains("Server is ready"))
                .unwrap_or(false);
            if ready
                && tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server not ready after 15 s: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The private CA's certificate file of a TLS server.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The server's own log (permission violations are logged there).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Write `content` to a file in the server's temporary directory (credentials files
    /// for the clients under test), mode 0600.
    pub fn write_file(&self, name: &str, content: &str) -> anyhow::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.dir.path().join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)?;
        f.write_all(content.as_bytes())?;
        Ok(path)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn quote(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', "\\\""))
}
