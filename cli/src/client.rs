//! The HTTP client the CLI commands share: where the server is, the bearer token, and
//! problem details turned into messages that say what to do next.

use reqwest::Method;
use serde_json::Value;

/// `IMAGELIB_URL` (default `http://127.0.0.1:8080`) and `IMAGELIB_TOKEN`.
#[derive(Debug, Clone, clap::Args)]
pub struct Connection {
    /// The imagelib server (`imagelib serve`, or a service's own port).
    #[arg(
        long = "server",
        env = "IMAGELIB_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub server: String,
    /// A bearer token (an admin token for writes).
    #[arg(long, env = "IMAGELIB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    conn: Connection,
}

impl Client {
    pub fn new(conn: Connection) -> Self {
        Client {
            http: reqwest::Client::new(),
            conn,
        }
    }

    pub fn json(&self) -> bool {
        self.conn.json
    }

    /// Whether the server lets a request without a token read (`IMAGELIB_ANONYMOUS_READ`),
    /// asked with a tokenless `GET /v1/stats`; `None` when the answer says neither.
    pub async fn anonymous_reads(&self) -> Option<bool> {
        let url = format!("{}/v1/stats", self.conn.server.trim_end_matches('/'));
        match self.http.get(&url).send().await.ok()?.status().as_u16() {
            200 => Some(true),
            401 => Some(false),
            _ => None,
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{}", self.conn.server.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.conn.token {
            req = req.bearer_auth(t);
        }
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Yaml(s)) => req.header("content-type", "application/yaml").body(s),
            None => req,
        };
        let res = req.send().await.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach imagelib at {}: {e}\nIs it running? Start it with `scripts/run` or set IMAGELIB_URL.",
                self.conn.server
            )
        })?;
        let status = res.status();
        let text = res.text().await?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(value);
        }
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"));
        let hint = match status.as_u16() {
            401 => "\nhint: set IMAGELIB_TOKEN (or --token) to a valid token",
            403 => {
                "\nhint: this needs a token with a stronger role (admin for registries and rules)"
            }
            404 => "\nhint: list what exists with `imagelib registry ls`",
            409 => "\nhint: someone changed it meanwhile; show it again and retry",
            _ => "",
        };
        anyhow::bail!(
            "{} {}: {detail}{hint}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
    }
}

#[derive(Debug)]
pub enum Body {
    Json(Value),
    Yaml(String),
}

/// A plain text table: a header and rows, columns padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

pub fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Print `value` as JSON, or with `human`.
pub fn print(
    json: bool,
    value: &Value,
    human: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let text = if json {
        serde_json::to_string_pretty(value)?
    } else {
        human(value)
    };
    writeln!(std::io::stdout(), "{}", text.trim_end())?;
    Ok(())
}

/// A secret from a file or stdin, never from argv.
pub fn read_secret(
    file: Option<&std::path::Path>,
    from_stdin: bool,
    what: &str,
) -> anyhow::Result<Option<String>> {
    use std::io::Read;
    let raw = match (file, from_stdin) {
        (Some(f), _) => std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("cannot read the {what} file {}: {e}", f.display()))?,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        }
        (None, false) => return Ok(None),
    };
    let v = raw.trim_end_matches(['\n', '\r']).to_owned();
    if v.is_empty() {
        anyhow::bail!("the {what} is empty");
    }
    Ok(Some(v))
}
