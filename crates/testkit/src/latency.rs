//! A TCP proxy that makes a server on loopback look remote: each direction's data is held
//! for half the round-trip time before it is passed on, and a new connection waits one
//! round trip (the TCP handshake) before its first byte goes anywhere.
//!
//! Benchmarks on loopback measure the server's CPU, not what users of a remote registry
//! wait for; this puts the round trips back. It is a byte pipe per connection over real
//! sockets, so HTTP keep-alive (connection reuse) and pipelining behave as they would
//! over a network, and data is delayed rather than serialised: a connection's throughput
//! is not capped by the delay. Bandwidth is not modelled.
//!
//! It also notes each HTTP/1.1 request line the clients send (`GET /v2/…`), so a
//! benchmark can count requests by kind for any client behind it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A running latency proxy (stopped when dropped).
#[derive(Debug)]
pub struct LatencyProxy {
    addr: SocketAddr,
    rtt: Duration,
    connections: Arc<AtomicUsize>,
    requests: Requests,
    task: tokio::task::JoinHandle<()>,
}

type Requests = Arc<Mutex<Vec<String>>>;

impl LatencyProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`, with
    /// `rtt` of round-trip time added.
    pub async fn start(upstream: SocketAddr, rtt: Duration) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let requests: Requests = Arc::default();
        let noted = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(connection(client, upstream, rtt, noted.clone()));
            }
        });
        Ok(LatencyProxy {
            addr,
            rtt,
            connections,
            requests,
            task,
        })
    }

    /// `127.0.0.1:<port>`, to use in place of the upstream's address.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Connections accepted so far (a client that reuses its connections opens few).
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// How many requests went through so far (an index for [`Self::requests_since`]).
    pub fn request_count(&self) -> usize {
        self.requests.lock().map(|r| r.len()).unwrap_or_default()
    }

    /// The request lines (`METHOD target`) sent since the `mark`-th request, in the
    /// order they reached the proxy.
    pub fn requests_since(&self, mark: usize) -> Vec<String> {
        self.requests
            .lock()
            .map(|r| r.get(mark..).map(<[String]>::to_vec).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, rtt: Duration, requests: Requests) {
    // The handshake: the client may send only once its SYN went out and the SYN-ACK came
    // back. What it writes meanwhile waits in the socket.
    tokio::time::sleep(rtt).await;
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Small writes (an HTTP request, a HEAD's answer) must not wait for Nagle.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let half = rtt / 2;
    tokio::join!(
        pipe(client_read, server_write, half, Some(requests)),
        pipe(server_read, client_write, half, None),
    );
}

/// Copies `from` to `to`, each chunk written `delay` after it was read; the end of `from`
/// reaches `to` (as a shutdown of its write side) `delay` later too.
async fn pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    delay: Duration,
    requests: Option<Requests>,
) {
    // Bounded: a reader far ahead of the writer waits (what a full TCP window does).
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        let mut lines = RequestLines::default();
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due = Instant::now() + delay;
                    if let Some(requests) = &requests {
                        let found = lines.feed(&buf[..n]);
                        if !found.is_empty()
                            && let Ok(mut r) = requests.lock()
                        {
                            r.extend(found);
                        }
                    }
                    if tx.send((due, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
        Instant::now() + delay
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return to;
            }
        }
        to
    };
    let (closed_at, mut to) = tokio::join!(reader, writer);
    tokio::time::sleep_until(closed_at).await;
    let _ = to.shutdown().await;
}

/// Finds the request lines in a client's byte stream: a request is a header block ended
/// by an empty line, then `Content-Length` bytes of body (chunked bodies are not expected
/// from registry clients' reads). A stream that is not HTTP yields nothing useful and
/// breaks nothing: the bytes are forwarded regardless.
#[derive(Debug, Default)]
struct RequestLines {
    head: Vec<u8>,
    body_left: usize,
}

impl RequestLines {
    const MAX_HEAD: usize = 64 * 1024;

    fn feed(&mut self, mut data: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        while !data.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(data.len());
                self.body_left -= n;
                data = &data[n..];
                continue;
            }
            let before = self.head.len();
            self.head.extend_from_slice(data);
            let from = before.saturating_sub(3);
            let Some(end) = self.head[from..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| from + p + 4)
            else {
                if self.head.len() > Self::MAX_HEAD {
                    self.head.clear();
                }
                return out;
            };
            let consumed = end - before;
            let head = String::from_utf8_lossy(&self.head[..end]).into_owned();
            self.head.clear();
            data = &data[consumed..];
            let mut lines = head.split("\r\n");
            if let Some(first) = lines.next() {
                let mut words = first.split(' ');
                if let (Some(method), Some(target)) = (words.next(), words.next()) {
                    out.push(format!("{method} {target}"));
                }
            }
            self.body_left = lines
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
                .and_then(|(_, v)| v.trim().parse().ok())
                .unwrap_or(0);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server: every read is written back.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    }

    #[tokio::test]
    async fn each_exchange_costs_a_round_trip_and_connections_are_reused() {
        let rtt = Duration::from_millis(40);
        let proxy = LatencyProxy::start(echo().await, rtt).await.unwrap();
        let t = std::time::Instant::now();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        assert_eq!(round_trip(&mut s, b"first").await, b"first");
        // The handshake's round trip, then the exchange's.
        let first = t.elapsed();
        assert!(first >= 2 * rtt, "{first:?}");
        let t = std::time::Instant::now();
        for i in 0..3u8 {
            assert_eq!(round_trip(&mut s, &[i; 100]).await, vec![i; 100]);
        }
        let three = t.elapsed();
        assert!(three >= 3 * rtt, "{three:?}");
        assert!(three < 3 * rtt + Duration::from_millis(200), "{three:?}");
        assert_eq!(proxy.connections(), 1, "one connection, reused");
    }

    #[tokio::test]
    async fn data_is_delayed_not_serialised() {
        let rtt = Duration::from_millis(50);
        let proxy = LatencyProxy::start(echo().await, rtt).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        s.set_nodelay(true).unwrap();
        round_trip(&mut s, b"warm").await;
        // 2 MB in 20 writes arrive back in about one round trip, not one per write.
        let chunk = vec![7u8; 100 * 1024];
        let t = std::time::Instant::now();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            for _ in 0..20 {
                w.write_all(&chunk).await.unwrap();
            }
            w
        });
        let mut got = vec![0u8; 20 * 100 * 1024];
        r.read_exact(&mut got).await.unwrap();
        let _w = writer.await.unwrap();
        let took = t.elapsed();
        assert!(took >= rtt, "{took:?}");
        assert!(took < 5 * rtt, "{took:?}");
        assert!(got.iter().all(|b| *b == 7));
    }

    #[test]
    fn request_lines_are_found_across_reads_and_bodies_skipped() {
        let mut l = RequestLines::default();
        let stream = b"GET /v2/a/tags/list?n=100 HTTP/1.1\r\nhost: x\r\n\r\nPOST /t HTTP/1.1\r\ncontent-length: 5\r\n\r\nGET /HEAD /v2/a/manifests/1 HTTP/1.1\r\n\r\n";
        let mut found = Vec::new();
        for chunk in stream.chunks(7) {
            found.extend(l.feed(chunk));
        }
        assert_eq!(
            found,
            vec![
                "GET /v2/a/tags/list?n=100",
                "POST /t",
                "HEAD /v2/a/manifests/1"
            ]
        );
        assert!(RequestLines::default().feed(&[0xff; 100]).is_empty());
    }

    #[tokio::test]
    async fn requests_through_it_are_noted() {
        let proxy = LatencyProxy::start(echo().await, Duration::ZERO)
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let req = b"HEAD /v2/x/manifests/latest HTTP/1.1\r\nhost: r\r\n\r\n";
        round_trip(&mut s, req).await;
        round_trip(&mut s, req).await;
        assert_eq!(proxy.request_count(), 2);
        assert_eq!(proxy.requests_since(1), vec!["HEAD /v2/x/manifests/latest"]);
    }

    #[tokio::test]
    async fn a_closed_upstream_closes_the_client() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = listener.local_addr().unwrap();
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(b"bye").await;
            }
        });
        let proxy = LatencyProxy::start(upstream, Duration::from_millis(10))
            .await
            .unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut all = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut all))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(all, b"bye");
    }
}
