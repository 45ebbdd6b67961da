//! A real forwarding HTTP proxy, the kind `HTTPS_PROXY` points at: `CONNECT host:port`
//! opens a tunnel (HTTPS targets), an absolute-form request (`GET http://host/…`) is passed
//! on (plain-HTTP targets). It resolves target names itself, as a proxy does, which is
//! exactly why the network guard has to check targets before a request reaches it.
//! Every connection and request line is recorded, so a test can prove nothing was sent.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Request heads larger than this are refused.
const MAX_HEAD: usize = 16 * 1024;

#[derive(Debug)]
pub struct ForwardProxy {
    pub addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<String>>>,
    received: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ForwardProxy {
    /// Listens on `ip` (any loopback address, e.g. 127.0.0.2, to keep it apart from the
    /// registries on 127.0.0.1) and a free port.
    pub async fn start(ip: IpAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, s, r) = (connections.clone(), seen.clone(), received.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                let seen = s.clone();
                let received = r.clone();
                tokio::spawn(async move {
                    let _ = serve(client, &seen, &received).await;
                });
            }
        });
        Ok(ForwardProxy {
            addr,
            connections,
            seen,
            received,
            task,
        })
    }

    /// `http://<addr>`, for `HTTPS_PROXY` or a registry's `proxy`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Request lines received, e.g. `CONNECT localhost:5000 HTTP/1.1`.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    /// Every byte clients sent to the proxy (heads, tunnelled bytes, forwarded bodies):
    /// what a proxy could read.
    pub fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// Copies both ways like `copy_bidirectional`, recording what the client sends.
async fn relay(
    client: TcpStream,
    upstream: TcpStream,
    received: &Mutex<Vec<u8>>,
) -> anyhow::Result<()> {
    let (mut client_r, mut client_w) = client.into_split();
    let (mut up_r, mut up_w) = upstream.into_split();
    let down = tokio::spawn(async move { tokio::io::copy(&mut up_r, &mut client_w).await });
    let mut buf = [0u8; 8192];
    loop {
        let n = client_r.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        received.lock().unwrap().extend_from_slice(&buf[..n]);
        up_w.write_all(&buf[..n]).await?;
    }
    let _ = up_w.shutdown().await;
    let _ = down.await;
    Ok(())
}

async fn serve(
    mut client: TcpStream,
    seen: &Mutex<Vec<String>>,
    received: &Mutex<Vec<u8>>,
) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        received.lock().unwrap().extend_from_slice(&buf[..n]);
        head.extend_from_slice(&buf[..n]);
        if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if head.len() > MAX_HEAD {
            client
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let line = text.lines().next().unwrap_or_default().to_owned();
    seen.lock().unwrap().push(line.clone());
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));

    if method.eq_ignore_ascii_case("CONNECT") {
        let Ok(mut upstream) = TcpStream::connect(target).await else {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
                .await?;
            return Ok(());
        };
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&head[end..]).await?;
        return relay(client, upstream, received).await;
    }

    // absolute form: `GET http://host:port/path HTTP/1.1` → origin form to host:port
    let Some(rest) = target.strip_prefix("http://") else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await?;
        return Ok(());
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let authority = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let Ok(mut upstream) = TcpStream::connect(authority.as_str()).await else {
        client
            .write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n")
            .await?;
        return Ok(());
    };
    let version = parts.next().unwrap_or("HTTP/1.1");
    let first_line_end = text.find("\r\n").unwrap_or(0);
    upstream
        .write_all(format!("{method} /{path} {version}").as_bytes())
        .await?;
    upstream.write_all(&head[first_line_end..]).await?;
    relay(client, upstream, received).await
}
