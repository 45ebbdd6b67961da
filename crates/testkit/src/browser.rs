//! A real headless Chromium for the web console's browser tests, driven over W3C
//! WebDriver (`fantoccini`) through Debian's `chromedriver`, which is built from the same
//! source as Debian's `chromium` and so always matches it.
//!
//! [`Browser::start`] starts `chromedriver` on a free loopback port in a process group of
//! its own, opens a session of a headless Chromium (`--headless=new --no-sandbox`, a
//! 1280×800 window, a temporary profile) that records its console
//! (`goog:loggingPrefs {browser: ALL}`), and kills the group (driver and browser) on
//! drop. When `chromium` or `chromedriver` is missing it fails with a message saying how to
//! install them (`deploy/local/up.sh` does): a browser test never passes by not running.
//!
//! Waits poll for what the page should show with a timeout ([`Browser::find`],
//! [`Browser::wait_text`], [`Browser::wait_url`]); nothing sleeps blindly. The browser's
//! console log is read with chromedriver's `POST /session/{id}/se/log` (`{"type":
//! "browser"}`; each entry is returned once), and [`Browser::assert_clean`] fails on any
//! `SEVERE` entry: script errors, failed loads and Content-Security-Policy violations are
//! all logged at that level.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

/// How long a wait polls before it fails (generous: CI runs the whole suite on 2 cores).
pub const WAIT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// The viewport of every session (and so of the screenshots).
pub const WIDTH: u32 = 1280;
pub const HEIGHT: u32 = 800;

/// One entry of the browser's console log.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct LogEntry {
    pub level: String,
    pub message: String,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub timestamp: Option<i64>,
}

impl LogEntry {
    pub fn is_severe(&self) -> bool {
        self.level.eq_ignore_ascii_case("SEVERE")
    }
}

/// chromedriver's `POST /session/{id}/se/log`: the entries of one log since the last read.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/se/log",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}

/// A running chromedriver and one browser session.
#[derive(Debug)]
pub struct Browser {
    client: Option<Client>,
    driver: Child,
    profile: tempfile::TempDir,
    /// Every console entry read so far, for failure messages.
    seen: std::sync::Mutex<Vec<LogEntry>>,
}

/// The first of `names` found on `PATH` (or the path in `env`, when set).
fn find_program(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

const MISSING: &str = "the browser tests need Debian's `chromium` and `chromium-driver` \
    (`bash deploy/local/up.sh` installs them; or `apt-get install chromium chromium-driver`; \
    IMAGELIB_CHROMIUM / IMAGELIB_CHROMEDRIVER name other binaries)";

impl Browser {
    /// Starts chromedriver and a headless Chromium session (see the module docs).
    pub async fn start() -> anyhow::Result<Self> {
        let chromium = find_program(
            "IMAGELIB_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        )
        .ok_or_else(|| anyhow!("`chromium` was not found: {MISSING}"))?;
        let chromedriver = find_program("IMAGELIB_CHROMEDRIVER", &["chromedriver"])
            .ok_or_else(|| anyhow!("`chromedriver` was not found: {MISSING}"))?;
        let profile = tempfile::Builder::new()
            .prefix("imagelib-browser-")
            .tempdir()?;
        // A port that was free a moment ago can be taken before chromedriver binds it:
        // try a few.
        let mut last_err = None;
        for _ in 0..3 {
            let port = crate::registry::free_port()?;
            let mut driver = spawn_driver(&chromedriver, port, profile.path())?;
            match wait_driver(&mut driver, port, profile.path()).await {
                Ok(()) => {
                    let mut browser = Browser {
                        client: None,
                        driver,
                        profile,
                        seen: Default::default(),
                    };
                    let client = browser.session(&chromium, port).await?;
                    browser.client = Some(client);
                    return Ok(browser);
                }
                Err(e) => {
                    kill_group(&mut driver);
                    last_err = Some(e);
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("chromedriver did not start")))
    }

    async fn session(&self, chromium: &Path, port: u16) -> anyhow::Result<Client> {
        let user_data = self.profile.path().join("profile");
        let args = vec![
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={WIDTH},{HEIGHT}"),
            "--force-device-scale-factor=1".to_owned(),
            "--hide-scrollbars".to_owned(),
            "--force-color-profile=srgb".to_owned(),
            "--lang=en-US".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            "--disable-features=Translate,MediaRouter,OptimizationHints".to_owned(),
            format!("--user-data-dir={}", user_data.display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        caps.insert("goog:loggingPrefs".into(), json!({ "browser": "ALL" }));
        // An alert left open would block the next command: dismiss it, and let the
        // command that met it fail (the hostile-content checks look for exactly that).
        caps.insert(
            "unhandledPromptBehavior".into(),
            json!("dismiss and notify"),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .map_err(|e| {
                anyhow!(
                    "chromedriver could not start {} ({e}); chromedriver's log:\n{}",
                    chromium.display(),
                    self.driver_log()
                )
            })?;
        // The window was asked for on the command line; make sure the viewport is exact.
        client.set_window_size(WIDTH, HEIGHT).await.ok();
        let (w, h) = viewport(&client).await?;
        if (w, h) != (WIDTH, HEIGHT) {
            let (ow, oh) = client.get_window_size().await?;
            client
                .set_window_size(
                    WIDTH + (ow as u32).saturating_sub(w),
                    HEIGHT + (oh as u32).saturating_sub(h),
                )
                .await?;
        }
        Ok(client)
    }

    /// The last lines chromedriver wrote (for failure messages).
    pub fn driver_log(&self) -> String {
        tail(&self.profile.path().join("chromedriver.log"), 30)
    }

    pub fn client(&self) -> &Client {
        self.client
            .as_ref()
            .expect("a started browser has a session")
    }

    /// Navigates to `url` (and waits for the load, as WebDriver does).
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client()
            .goto(url)
            .await
            .with_context(|| format!("open {url}"))
    }

    pub async fn current_url(&self) -> anyhow::Result<url::Url> {
        Ok(self.client().current_url().await?)
    }

    /// Polls until `pred` holds for the current URL.
    pub async fn wait_url(
        &self,
        what: &str,
        pred: impl Fn(&url::Url) -> bool,
    ) -> anyhow::Result<url::Url> {
        let deadline = Instant::now() + WAIT;
        loop {
            let url = self.current_url().await?;
            if pred(&url) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for the URL to be {what}; it is {url}\n{}",
                    self.page_summary().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The page's title and the text of its `main` (at most 2,000 characters), for
    /// failure messages.
    pub async fn page_summary(&self) -> String {
        let title = self.client().title().await.unwrap_or_default();
        let main = match self.client().find(Locator::Css("main")).await {
            Ok(m) => m.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let main: String = main.chars().take(2000).collect();
        format!("page {title:?}:\n{main}")
    }

    /// The first element matching `css`, polling until one is there.
    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.client().find(Locator::Css(css)).await {
                Ok(e) => return Ok(e),
                Err(e) if e.is_no_such_element() => {}
                Err(e) => return Err(e).with_context(|| format!("find {css}")),
            }
            if Instant::now() >= deadline {
                let url = self.current_url().await.map(|u| u.to_string());
                bail!(
                    "timed out waiting for `{css}` on {}\n{}",
                    url.unwrap_or_default(),
                    self.page_summary().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Every element matching `css` now (maybe none).
    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        Ok(self.client().find_all(Locator::Css(css)).await?)
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        Ok(self.find(css).await?.text().await?)
    }

    /// Polls until the first element matching `css` has a text containing `needle`.
    pub async fn wait_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + WAIT;
        let mut last = String::new();
        loop {
            if let Ok(e) = self.client().find(Locator::Css(css)).await {
                match e.text().await {
                    Ok(t) if t.contains(needle) => return Ok(t),
                    Ok(t) => last = t,
                    Err(e) if e.is_stale_element_reference() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "timed out waiting for `{css}` to contain {needle:?}; it reads {last:?}\n{}",
                    self.page_summary().await
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Replaces the value of the field matching `css` with `value`.
    pub async fn fill(&self, css: &str, value: &str) -> anyhow::Result<()> {
        let field = self.find(css).await?;
        field.clear().await?;
        field
            .send_keys(value)
            .await
            .with_context(|| format!("type into {css}"))
    }

    /// Chooses the option of the `select` matching `css` whose value is `value`.
    pub async fn select(&self, css: &str, value: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .select_by_value(value)
            .await
            .with_context(|| format!("select {value:?} in {css}"))
    }

    /// Clicks the first element matching `css`.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        self.find(css)
            .await?
            .click()
            .await
            .with_context(|| format!("click {css}"))
    }

    /// Clicks the first element matching `css` whose text contains `label`.
    pub async fn click_text(&self, css: &str, label: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        loop {
            for e in self.find_all(css).await? {
                if e.text().await.is_ok_and(|t| t.contains(label)) {
                    return e
                        .click()
                        .await
                        .with_context(|| format!("click {css} {label:?}"));
                }
            }
            if Instant::now() >= deadline {
                bail!("timed out waiting for `{css}` reading {label:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether an alert (or another user prompt) is open — there should never be one.
    pub async fn alert_open(&self) -> bool {
        self.client().get_alert_text().await.is_ok()
    }

    /// The browser's console entries since the last read.
    pub async fn browser_log(&self) -> anyhow::Result<Vec<LogEntry>> {
        let value = self
            .client()
            .issue_cmd(GetLog("browser"))
            .await
            .context("read the browser log (POST /session/{id}/se/log)")?;
        let entries: Vec<LogEntry> =
            serde_json::from_value(value).context("the browser log's entries")?;
        if let Ok(mut seen) = self.seen.lock() {
            seen.extend(entries.iter().cloned());
        }
        Ok(entries)
    }

    /// Fails when the browser logged a `SEVERE` entry since the last read, or when an
    /// alert is open; `context` names the page.
    pub async fn assert_clean(&self, context: &str) -> anyhow::Result<()> {
        self.assert_clean_except(context, &[]).await
    }

    /// [`Browser::assert_clean`], allowing `SEVERE` entries whose message contains one of
    /// `allowed` (e.g. the status of a page expected to answer 422).
    pub async fn assert_clean_except(&self, context: &str, allowed: &[&str]) -> anyhow::Result<()> {
        if let Ok(text) = self.client().get_alert_text().await {
            bail!("{context}: an alert is open: {text:?}");
        }
        let severe: Vec<LogEntry> = self
            .browser_log()
            .await?
            .into_iter()
            .filter(|e| e.is_severe() && !allowed.iter().any(|a| e.message.contains(a)))
            .collect();
        let problems = self.accessibility_problems().await?;
        if !problems.is_empty() {
            bail!(
                "{context}: the page breaks the console's accessibility rules:\n  {}",
                problems.join("\n  ")
            );
        }
        if !severe.is_empty() {
            let lines: Vec<String> = severe
                .iter()
                .map(|e| {
                    format!(
                        "  {} [{}] {}",
                        e.level,
                        e.source.as_deref().unwrap_or("-"),
                        e.message
                    )
                })
                .collect();
            bail!(
                "{context}: the browser logged {} error(s):\n{}",
                severe.len(),
                lines.join("\n")
            );
        }
        Ok(())
    }

    /// What the page in the browser breaks of the console's structural accessibility rules
    /// (WCAG 2.1 AA's checkable part): a language, one `h1`, a `main` landmark, every form
    /// control labelled, every image with an `alt`, every link and button with a name, no
    /// duplicate `id`, every `aria-describedby` pointing at something that exists. Read from
    /// the rendered DOM, so what a page's script changes counts too.
    pub async fn accessibility_problems(&self) -> anyhow::Result<Vec<String>> {
        const CHECK: &str = r#"
            const out = [];
            const name = (el) => (el.getAttribute('aria-label') || el.textContent || el.value || el.title || '').trim();
            if (!document.documentElement.lang) out.push('<html> has no lang');
            const h1 = document.querySelectorAll('h1').length;
            if (h1 !== 1) out.push(h1 + ' h1 elements (one expected)');
            if (document.querySelectorAll('main').length !== 1) out.push('not exactly one <main>');
            for (const el of document.querySelectorAll('input, select, textarea')) {
              const t = (el.getAttribute('type') || '').toLowerCase();
              if (['hidden', 'submit', 'button', 'reset', 'image'].includes(t)) continue;
              const labelled = (el.labels && el.labels.length > 0) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby');
              if (!labelled) out.push('unlabelled ' + el.tagName.toLowerCase() + ' name=' + el.name);
            }
            for (const el of document.querySelectorAll('img')) {
              if (!el.hasAttribute('alt')) out.push('img without alt: ' + el.src);
            }
            for (const el of document.querySelectorAll('a[href], button')) {
              if (!name(el)) out.push('nameless ' + el.tagName.toLowerCase() + ' ' + (el.getAttribute('href') || ''));
            }
            const ids = new Map();
            for (const el of document.querySelectorAll('[id]')) ids.set(el.id, (ids.get(el.id) || 0) + 1);
            for (const [id, n] of ids) if (n > 1) out.push('id ' + id + ' used ' + n + ' times');
            for (const el of document.querySelectorAll('[aria-describedby]')) {
              for (const id of el.getAttribute('aria-describedby').split(/\s+/)) {
                if (id && !document.getElementById(id)) out.push('aria-describedby points at missing #' + id);
              }
            }
            return out;
        "#;
        let v = self.client().execute(CHECK, vec![]).await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Every console entry read so far.
    pub fn seen_log(&self) -> Vec<LogEntry> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        Ok(self.client().screenshot().await?)
    }

    /// A PNG of the viewport written to `path` (its directory created).
    pub async fn save_screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self.screenshot().await?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    /// Ends the session, then chromedriver.
    pub async fn close(mut self) -> anyhow::Result<()> {
        if let Some(client) = self.client.take() {
            client.close().await?;
        }
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The session's own task would end the session when the client goes, but the
        // driver is killed right here: chromedriver and the Chromium it started share its
        // process group.
        self.client.take();
        kill_group(&mut self.driver);
    }
}

fn spawn_driver(chromedriver: &Path, port: u16, dir: &Path) -> anyhow::Result<Child> {
    use std::os::unix::process::CommandExt as _;
    Command::new(chromedriver)
        .arg(format!("--port={port}"))
        .arg("--allowed-ips=127.0.0.1")
        .arg(format!(
            "--log-path={}",
            dir.join("chromedriver.log").display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // A group of its own, so that the browser it starts dies with it.
        .process_group(0)
        .spawn()
        .with_context(|| format!("start {}", chromedriver.display()))
}

/// Polls chromedriver's `/status` until it is ready (10 s at most).
async fn wait_driver(driver: &mut Child, port: u16, dir: &Path) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = driver.try_wait()? {
            bail!(
                "chromedriver exited ({status}):\n{}",
                tail(&dir.join("chromedriver.log"), 30)
            );
        }
        if let Ok(res) = http
            .get(format!("http://127.0.0.1:{port}/status"))
            .send()
            .await
            && let Ok(v) = res.json::<serde_json::Value>().await
            && v["value"]["ready"] == true
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "chromedriver did not answer on port {port} within 10 s:\n{}",
                tail(&dir.join("chromedriver.log"), 30)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// SIGKILL to the child's whole process group, then reap the child.
fn kill_group(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// The size of the page's viewport.
async fn viewport(client: &Client) -> anyhow::Result<(u32, u32)> {
    let v = client
        .execute(
            "return [window.innerWidth, window.innerHeight];",
            Vec::new(),
        )
        .await?;
    let w = v[0].as_u64().unwrap_or_default() as u32;
    let h = v[1].as_u64().unwrap_or_default() as u32;
    Ok((w, h))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
