//! A fault-injecting HTTP/1.1 proxy for tests: it sits in front of a real registry and,
//! request by request, forwards, rewrites the registry's answer, answers by itself, stalls
//! or drops the connection; everything it receives is recorded. Without an upstream it is
//! a plain recording server (a foreign host, an HTML page).
//!
//! [`paginate_tags`] exists because distribution 2.8 does not paginate `tags/list`: the
//! proxy pages the registry's answer as `n` asks, with an opaque `last` cursor in the
//! `Link` header.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.into(),
        }
    }

    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
    }

    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }
}

type Rewrite = Box<dyn FnOnce(Response) -> Response + Send>;

pub enum Action {
    Forward,
    /// Forward, then change the registry's answer.
    Rewrite(Rewrite),
    /// Forward this request instead (the proxy's own pagination, say), then rewrite.
    ForwardAs(Request, Rewrite),
    Respond(Response),
    /// Never answer.
    Stall,
    /// Close the connection without an answer.
    Drop,
    /// Write these bytes as the answer, then close.
    Raw(Vec<u8>),
    /// Wait, then forward.
    Delay(Duration),
}

type Rule = dyn Fn(&Request, usize) -> Action + Send + Sync;

impl std::fmt::Debug for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Forward => f.write_str("Forward"),
            Action::Rewrite(_) => f.write_str("Rewrite(..)"),
            Action::ForwardAs(req, _) => f.debug_tuple("ForwardAs").field(req).finish(),
            Action::Respond(resp) => f.debug_tuple("Respond").field(&resp.status).finish(),
            Action::Stall => f.write_str("Stall"),
            Action::Drop => f.write_str("Drop"),
            Action::Raw(bytes) => f.debug_tuple("Raw").field(&bytes.len()).finish(),
            Action::Delay(d) => f.debug_tuple("Delay").field(d).finish(),
        }
    }
}

#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
    in_flight_max: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// `rule(request, n)` decides for the n-th request (from 0).
    pub async fn start(
        upstream: Option<SocketAddr>,
        rule: impl Fn(&Request, usize) -> Action + Send + Sync + 'static,
    ) -> Self {
        Self::start_at("127.0.0.1:0", upstream, rule).await
    }

    /// [`Self::start`] on another address (another loopback address, `127.0.0.2:0`, stands
    /// in for a link-local metadata server).
    pub async fn start_at(
        bind: &str,
        upstream: Option<SocketAddr>,
        rule: impl Fn(&Request, usize) -> Action + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind(bind).await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let in_flight_max = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(State {
            upstream,
            rule: Box::new(rule),
            seen: seen.clone(),
            counter: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_max: in_flight_max.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    let _ = handle(socket, &state).await;
                });
            }
        });
        FaultProxy {
            addr,
            seen,
            in_flight_max,
            task,
        }
    }

    /// A server that answers every request with `response` and records what it got.
    pub async fn respond_always(response: Response) -> Self {
        Self::start(None, move |_, _| Action::Respond(response.clone())).await
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    pub fn seen(&self) -> Vec<Request> {
        self.seen.lock().unwrap().clone()
    }

    /// The most requests that were in flight at once.
    pub fn max_in_flight(&self) -> usize {
        self.in_flight_max.load(Ordering::SeqCst)
    }
}

struct State {
    upstream: Option<SocketAddr>,
    rule: Box<Rule>,
    seen: Arc<Mutex<Vec<Request>>>,
    counter: AtomicUsize,
    in_flight: AtomicUsize,
    in_flight_max: Arc<AtomicUsize>,
}

async fn handle(mut socket: TcpStream, state: &State) -> std::io::Result<()> {
    let Some(request) = read_request(&mut socket).await? else {
        return Ok(());
    };
    state.seen.lock().unwrap().push(request.clone());
    let n = state.counter.fetch_add(1, Ordering::SeqCst);
    let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    state.in_flight_max.fetch_max(now, Ordering::SeqCst);
    let result = async {
        let response = match (state.rule)(&request, n) {
            Action::Respond(r) => r,
            Action::Forward => forward(state, &request).await?,
            Action::Rewrite(f) => f(forward(state, &request).await?),
            Action::ForwardAs(other, f) => f(forward(state, &other).await?),
            Action::Delay(d) => {
                tokio::time::sleep(d).await;
                forward(state, &request).await?
            }
            Action::Stall => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Action::Drop => return Ok(()),
            Action::Raw(bytes) => {
                socket.write_all(&bytes).await?;
                return socket.shutdown().await;
            }
        };
        write_response(&mut socket, &request.method, &response).await
    }
    .await;
    state.in_flight.fetch_sub(1, Ordering::SeqCst);
    result
}

async fn forward(state: &State, request: &Request) -> std::io::Result<Response> {
    let upstream = state
        .upstream
        .expect("a rule forwarded without an upstream");
    let mut conn = TcpStream::connect(upstream).await?;
    let mut head = format!("{} {} HTTP/1.1\r\n", request.method, request.target);
    for (k, v) in &request.headers {
        if !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n",
        request.body.len()
    ));
    conn.write_all(head.as_bytes()).await?;
    conn.write_all(&request.body).await?;
    let mut raw = Vec::new();
    conn.read_to_end(&mut raw).await?;
    let split = find(&raw, b"\r\n\r\n").ok_or_else(|| io_error("upstream sent no head"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io_error("bad upstream status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    if header(&headers, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body)?;
    }
    let headers = headers
        .into_iter()
        .filter(|(k, _)| {
            !k.eq_ignore_ascii_case("transfer-encoding") && !k.eq_ignore_ascii_case("connection")
        })
        .collect();
    Ok(Response {
        status,
        headers,
        body,
    })
}

async fn write_response(socket: &mut TcpStream, method: &str, r: &Response) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
    for (k, v) in &r.headers {
        if method == "HEAD" || !k.eq_ignore_ascii_case("content-length") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if method != "HEAD" {
        head.push_str(&format!("Content-Length: {}\r\n", r.body.len()));
    }
    head.push_str("Connection: close\r\n\r\n");
    socket.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        socket.write_all(&r.body).await?;
    }
    socket.shutdown().await
}

async fn read_request(socket: &mut (impl AsyncRead + Unpin)) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let split = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or_default().to_owned();
    let target = first.next().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let length: usize = header(&headers, "content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[split + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(Some(Request {
        method,
        target,
        headers,
        body,
    }))
}

fn dechunk(mut raw: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n").ok_or_else(|| io_error("bad chunk"))?;
        let size_hex = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size_hex.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| io_error("bad chunk size"))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn io_error(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_owned())
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// Pages a `tags/list` request the way registries that paginate do: the whole list is
/// fetched from the registry, sorted, and the page after the opaque cursor `last` (an
/// index, encoded) is answered with a `Link` to the next one. `fail_after` answers every
/// page after that many with a 500 (a listing cut short).
pub fn paginate_tags(req: &Request, fail_after: Option<usize>) -> Action {
    let path = req.path().to_owned();
    let query = req
        .target
        .split_once('?')
        .map(|(_, q)| q)
        .unwrap_or_default();
    let mut n: Option<usize> = None;
    let mut start = 0usize;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", v)) => n = v.parse().ok(),
            Some(("last", v)) => {
                start = v
                    .strip_prefix("cursor-")
                    .and_then(|i| i.parse().ok())
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    let Some(n) = n else { return Action::Forward };
    let page = start / n.max(1);
    if fail_after.is_some_and(|f| page >= f) {
        return Action::Respond(Response::new(500, &[], "page unavailable"));
    }
    let all = Request {
        target: path.clone(),
        ..req.clone()
    };
    Action::ForwardAs(
        all,
        Box::new(move |mut resp| {
            if resp.status != 200 {
                return resp;
            }
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            let mut tags: Vec<String> =
                serde_json::from_value(v["tags"].clone()).unwrap_or_default();
            tags.sort();
            let total = tags.len();
            let slice: Vec<String> = tags.into_iter().skip(start).take(n).collect();
            resp.body = serde_json::to_vec(&serde_json::json!({"name": v["name"], "tags": slice}))
                .unwrap_or_default();
            resp.remove_header("content-length");
            if start + n < total {
                resp.set_header(
                    "Link",
                    &format!("<{path}?n={n}&last=cursor-{}>; rel=\"next\"", start + n),
                );
            }
            resp
        }),
    )
}
