//! Three `nats-server` processes as one JetStream cluster on loopback, for the tests that
//! show imagelib surviving the loss of a node.
//!
//! Each node has its own client port, route port and store directory; the routes name all
//! three nodes. [`NatsCluster::start`] returns only once the cluster has elected its meta
//! leader and placed a stream at R3, since before that every stream creation fails.
//! A node can be killed with SIGKILL (no shutdown, as a crash) and restarted on the same
//! ports and store, where it catches up from its peers. Everything is killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::nats::{check_config, nats_server_bin};

/// How long a node gets to start, and the cluster to elect its leaders.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// One node of the cluster.
#[derive(Debug)]
pub struct ClusterNode {
    /// `n0`, `n1`, `n2`: the node's `server_name`.
    pub name: String,
    /// The client port.
    pub port: u16,
    /// The route port.
    pub route_port: u16,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
    conf: PathBuf,
    child: Option<Child>,
    starts: u32,
}

/// A running three-node cluster.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<ClusterNode>,
    dir: tempfile::TempDir,
}

impl NatsCluster {
    /// Start three nodes and wait until a stream can be placed at R3.
    ///
    /// The ports are free when chosen, but a test running beside this one may bind one
    /// before the node does (`address already in use`, the node exits): then the cluster
    /// starts again on new ports, a few times.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(&mut crate::registry::free_port).await
    }

    /// [`NatsCluster::start`] with the ports `port` gives (a test of the retry hands it a
    /// taken one first).
    pub async fn start_on(
        port: &mut (dyn FnMut() -> anyhow::Result<u16> + Send),
    ) -> anyhow::Result<Self> {
        let mut attempt = 1;
        loop {
            match Self::start_nodes(3, port).await {
                Err(e) if attempt < 5 && e.to_string().contains("address already in use") => {
                    tracing::warn!(attempt, error = %e, "a port was taken before its node bound it; starting the cluster again");
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_nodes(
        count: usize,
        port: &mut (dyn FnMut() -> anyhow::Result<u16> + Send),
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::with_capacity(count);
        for _ in 0..count {
            ports.push((port()?, port()?));
        }
        let routes = ports
            .iter()
            .map(|(_, r)| format!("\"nats-route://127.0.0.1:{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let mut nodes = Vec::with_capacity(count);
        for (i, (port, route_port)) in ports.into_iter().enumerate() {
            let name = format!("n{i}");
            let store = dir.path().join(format!("{name}-js"));
            let conf = format!(
                "server_name: {name}\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 jetstream {{\n  store_dir: {}\n  max_file_store: 2GB\n  max_memory_store: 64MB\n}}\n\
                 cluster {{\n  name: imagelib-test\n  listen: \"127.0.0.1:{route_port}\"\n  routes: [{routes}]\n}}\n",
                quote(&store)
            );
            let conf_path = dir.path().join(format!("{name}.conf"));
            std::fs::write(&conf_path, conf)?;
            check_config(&conf_path)?;
            nodes.push(ClusterNode {
                name,
                port,
                route_port,
                url: format!("nats://127.0.0.1:{port}"),
                conf: conf_path,
                child: None,
                starts: 0,
            });
        }
        let mut cluster = NatsCluster { nodes, dir };
        for i in 0..count {
            cluster.spawn(i)?;
        }
        for i in 0..count {
            cluster.wait_listening(i).await?;
        }
        cluster.wait_r3().await?;
        Ok(cluster)
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[ClusterNode] {
        &self.nodes
    }

    /// Every node's client URL, comma-separated (what `IMAGELIB_NATS_URL` takes), starting
    /// with node `first`.
    pub fn urls_from(&self, first: usize) -> String {
        let n = self.nodes.len();
        (0..n)
            .map(|k| self.nodes[(first + k) % n].url.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's client URL, comma-separated.
    pub fn urls(&self) -> String {
        self.urls_from(0)
    }

    /// Every node's address, for `async_nats::connect` (which takes no comma list).
    pub fn server_addrs(&self) -> Vec<async_nats::ServerAddr> {
        self.nodes
            .iter()
            .filter_map(|n| n.url.parse().ok())
            .collect()
    }

    /// Whether node `i` is running.
    pub fn is_running(&mut self, i: usize) -> bool {
        self.nodes[i]
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGKILL node `i` and reap it: no shutdown, as a crash.
    pub fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.kill().context("killing nats-server")?;
            child.wait()?;
        }
        Ok(())
    }

    /// Start node `i` again on its ports and store and wait until it listens.
    pub async fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i)?;
        self.spawn(i)?;
        self.wait_listening(i).await
    }

    /// The log of node `i`'s current run.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    fn log_path(&self, i: usize) -> PathBuf {
        let node = &self.nodes[i];
        self.dir
            .path()
            .join(format!("{}-{}.log", node.name, node.starts))
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes[i].starts += 1;
        let log = self.log_path(i);
        let child = Command::new(nats_server_bin()?)
            .arg("-c")
            .arg(&self.nodes[i].conf)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting nats-server")?;
        self.nodes[i].child = Some(child);
        Ok(())
    }

    async fn wait_listening(&mut self, i: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let port = self.nodes[i].port;
        loop {
            if let Some(child) = self.nodes[i].child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "nats-server {} exited ({status}): {}",
                    self.nodes[i].name,
                    self.log(i)
                );
            }
            let ready = self.log(i).contains("Server is ready");
            if ready
                && tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "nats-server {} not ready after {START_DEADLINE:?}: {}",
                    self.nodes[i].name,
                    self.log(i)
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Wait until the cluster places (and removes) a stream at R3: the meta leader is
    /// elected and every node takes part.
    async fn wait_r3(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        let probe = format!("PROBE_{}", crate::unique_id());
        let mut last_error = String::new();
        while Instant::now() < deadline {
            let attempt = async {
                let client = async_nats::connect(self.server_addrs()).await?;
                let js = async_nats::jetstream::new(client);
                js.create_stream(async_nats::jetstream::stream::Config {
                    name: probe.clone(),
                    subjects: vec![format!("{}.>", probe.to_lowercase())],
                    num_replicas: 3,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    max_bytes: 1024 * 1024,
                    ..Default::default()
                })
                .await?;
                js.delete_stream(&probe).await?;
                Ok::<_, anyhow::Error>(())
            };
            match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "timed out".into(),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bail!("the NATS cluster placed no R3 stream within {START_DEADLINE:?}: {last_error}")
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn quote(p: &Path) -> String {
    format!("\"{}\"", p.display().to_string().replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stream_at_r3_survives_a_killed_node() {
        let mut cluster = NatsCluster::start().await.expect("a cluster");
        let client = async_nats::connect(cluster.server_addrs())
            .await
            .expect("connect");
        let js = async_nats::jetstream::new(client);
        let name = format!("C_{}", crate::unique_id());
        let subject = format!("{}.x", name.to_lowercase());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            num_replicas: 3,
            max_bytes: 1024 * 1024,
            ..Default::default()
        })
        .await
        .expect("an R3 stream");
        js.publish(subject.clone(), "1".into())
            .await
            .expect("publish")
            .await
            .expect("ack");
        cluster.kill(1).expect("kill");
        assert!(!cluster.is_running(1));
        // Two of three keep quorum: appends still go through (after an election if the
        // killed node led the stream).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ack = async { js.publish(subject.clone(), "2".into()).await?.await };
            match tokio::time::timeout(Duration::from_secs(3), ack).await {
                Ok(Ok(_)) => break,
                _ if Instant::now() < deadline => {}
                other => panic!("no append with one node down: {other:?}"),
            }
        }
        cluster.restart(1).await.expect("restart");
        assert!(cluster.is_running(1));
        assert_eq!(
            cluster.urls_from(1).split(',').next(),
            Some(&*cluster.nodes()[1].url)
        );
        let mut stream = js.get_stream(&name).await.expect("the stream");
        assert!(stream.info().await.expect("info").state.messages >= 2);
        let _ = js.delete_stream(&name).await;
    }
}
