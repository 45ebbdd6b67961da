//! The HTTP client the CLI commands share: where the server is, the bearer token, the
//! output format, and answers turned into messages that say what to do next and into exit
//! codes a script can branch on.
//!
//! The token never comes from a flag: argv is readable by every user of the machine
//! (`ps`, `/proc/<pid>/cmdline`), so it comes from `IMAGELIB_TOKEN` or a file.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

/// Exit codes (README, "CLI"): 0 success, 1 any other failure (a file that cannot be read,
/// a failed scan), 2 usage, 3 not found, 4 refused, 5 conflict, 6 server or network error.
pub mod exit {
    pub const FAILURE: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const REFUSED: u8 = 4;
    pub const CONFLICT: u8 = 5;
    pub const SERVER: u8 = 6;
}

/// A failure with its exit code; anything else the CLI returns exits 1.
#[derive(Debug)]
pub struct CliError {
    pub code: u8,
    pub message: String,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CliError {}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            code: exit::USAGE,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        CliError {
            code: exit::NOT_FOUND,
            message: message.into(),
        }
    }

    /// The exit code for an HTTP status the server answered with.
    pub fn code_for_status(status: u16) -> u8 {
        match status {
            404 | 410 => exit::NOT_FOUND,
            409 | 412 => exit::CONFLICT,
            400..=499 => exit::REFUSED,
            _ => exit::SERVER,
        }
    }
}

/// The exit code of an error: the first [`CliError`] in its chain, else 1.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    e.chain()
        .find_map(|c| c.downcast_ref::<CliError>())
        .map_or(exit::FAILURE, |c| c.code)
}

/// How listings and single objects are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Output {
    /// Human-readable tables and fields.
    #[default]
    Table,
    /// The API's JSON, pretty-printed.
    Json,
    /// The API's JSON as YAML.
    Yaml,
}

/// `IMAGELIB_URL` (default `http://127.0.0.1:8080`); the token from `IMAGELIB_TOKEN` or
/// `--token-file`/`IMAGELIB_TOKEN_FILE`; the output format; the request timeout.
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
    /// Refused: a token on the command line shows in `ps`. Use IMAGELIB_TOKEN or --token-file.
    #[arg(long = "token", global = true, hide = true, value_name = "REFUSED")]
    pub token_flag: Option<String>,
    /// A file holding the bearer token (an admin token for writes); without it the token
    /// comes from IMAGELIB_TOKEN.
    #[arg(long, env = "IMAGELIB_TOKEN_FILE", global = true, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Output format of listings and shown objects.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        global = true,
        conflicts_with = "json"
    )]
    pub output: Option<Output>,
    /// The same as `-o json`.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds before a request to the server is given up (exit code 6).
    #[arg(
        long = "timeout",
        env = "IMAGELIB_TIMEOUT",
        default_value_t = 30,
        global = true,
        value_name = "SECONDS",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub timeout: u64,
}

impl Connection {
    /// The output format `-o`/`--json` ask for.
    pub fn output(&self) -> Output {
        match (self.output, self.json) {
            (Some(o), _) => o,
            (None, true) => Output::Json,
            (None, false) => Output::Table,
        }
    }

    /// The bearer token: the token file when one is named, else `IMAGELIB_TOKEN`.
    pub fn token(&self) -> anyhow::Result<Option<String>> {
        if self.token_flag.is_some() {
            return Err(CliError::usage(
                "--token is not accepted: a token on the command line is visible to every user in `ps`.\n\
                 Put it in IMAGELIB_TOKEN, or in a file named by --token-file or IMAGELIB_TOKEN_FILE.",
            )
            .into());
        }
        if let Some(path) = &self.token_file {
            let raw = std::fs::read_to_string(path).map_err(|e| {
                CliError::usage(format!(
                    "cannot read the token file {}: {e}",
                    path.display()
                ))
            })?;
            let t = raw.trim().to_owned();
            if t.is_empty() {
                return Err(
                    CliError::usage(format!("the token file {} is empty", path.display())).into(),
                );
            }
            return Ok(Some(t));
        }
        Ok(std::env::var("IMAGELIB_TOKEN")
            .ok()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty()))
    }
}

/// An answer: its JSON body and its `ETag`.
#[derive(Debug)]
pub struct Reply {
    pub value: Value,
    pub etag: Option<String>,
}

#[derive(Debug)]
pub struct Client {
    http: reqwest::Client,
    server: String,
    token: Option<String>,
    output: Output,
}

impl Client {
    /// Fails (usage) on `--token` and on an unreadable token file.
    pub fn new(conn: Connection) -> anyhow::Result<Self> {
        let token = conn.token()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(conn.timeout))
            .build()?;
        Ok(Client {
            http,
            token,
            output: conn.output(),
            server: conn.server,
        })
    }

    pub fn output(&self) -> Output {
        self.output
    }

    /// Whether the output is for a program (JSON or YAML), so progress stays off stdout.
    pub fn json(&self) -> bool {
        self.output != Output::Table
    }

    /// Whether the server lets a request without a token read (`IMAGELIB_ANONYMOUS_READ`),
    /// asked with a tokenless `GET /v1/stats`; `None` when the answer says neither.
    pub async fn anonymous_reads(&self) -> Option<bool> {
        let url = format!("{}/v1/stats", self.server.trim_end_matches('/'));
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
        Ok(self.send_with(method, path, body, &[]).await?.value)
    }

    /// A request with extra headers (`If-Match`); the answer with its `ETag`.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        headers: &[(HeaderName, String)],
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{}", self.server.trim_end_matches('/'), path);
        let mut req = self.http.request(method, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let mut extra = HeaderMap::new();
        for (k, v) in headers {
            extra.insert(k.clone(), HeaderValue::from_str(v)?);
        }
        req = req.headers(extra);
        req = match body {
            Some(Body::Json(v)) => req.json(&v),
            Some(Body::Yaml(s)) => req.header("content-type", "application/yaml").body(s),
            None => req,
        };
        let res = req.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "no answer in time (raise --timeout or IMAGELIB_TIMEOUT)".to_owned()
            } else {
                e.to_string()
            };
            CliError {
                code: exit::SERVER,
                message: format!(
                    "cannot reach imagelib at {}: {why}\nIs it running? Start it with `scripts/run` or set IMAGELIB_URL.",
                    self.server
                ),
            }
        })?;
        let status = res.status();
        let etag = res
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = res.text().await.map_err(|e| CliError {
            code: exit::SERVER,
            message: format!("the answer from {url} broke off: {e}"),
        })?;
        let value: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if status.is_success() {
            return Ok(Reply { value, etag });
        }
        let detail = value
            .get("detail")
            .and_then(Value::as_str)
            .unwrap_or_else(|| status.canonical_reason().unwrap_or("error"));
        let code = value
            .get("code")
            .and_then(Value::as_str)
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default();
        let fields: String = value
            .get("errors")
            .and_then(Value::as_array)
            .map(|errs| {
                errs.iter()
                    .map(|e| {
                        format!(
                            "\n  {}: {}",
                            e["pointer"].as_str().unwrap_or(""),
                            e["detail"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A policy refusal's findings (serving-deployer's deploy gate), one a line.
        let findings: String = value
            .get("findings")
            .and_then(Value::as_array)
            .map(|fs| {
                fs.iter()
                    .map(|f| format!("\n  - {}: {}", s(&f["reason"]), s(&f["detail"])))
                    .collect()
            })
            .unwrap_or_default();
        let policy = code.starts_with(" [policy-");
        let hint = match status.as_u16() {
            _ if policy => "",
            401 => "\nhint: set IMAGELIB_TOKEN (or --token-file) to a valid token",
            403 => {
                "\nhint: this needs a token with a stronger role (admin for registries and rules)"
            }
            404 => "\nhint: list what exists with `imagelib registry ls`",
            409 | 412 => "\nhint: someone changed it meanwhile; show it again and retry",
            _ => "",
        };
        Err(CliError {
            code: CliError::code_for_status(status.as_u16()),
            message: format!(
                "{} {}: {detail}{code}{fields}{findings}{hint}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            ),
        }
        .into())
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

/// Print `value` as JSON or YAML, or as a table with `human`.
pub fn print(
    output: Output,
    value: &Value,
    human: impl FnOnce(&Value) -> String,
) -> anyhow::Result<()> {
    use std::io::Write;
    let text = match output {
        Output::Json => serde_json::to_string_pretty(value)?,
        Output::Yaml => serde_norway::to_string(value)?,
        Output::Table => human(value),
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
