//! `imagelib events tail|publish`: the stream, from a terminal.

use std::io::Read;

use clap::Subcommand;
use imagelib_events::bus::EventBus;
use imagelib_platform::config::CommonConfig;

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print events from the stream as CloudEvents JSON (one per line).
    Tail {
        /// Start at this stream sequence (default: the beginning).
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Only events whose type contains this text.
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only events whose CloudEvent subject contains this text (e.g. a repository name
        /// or `registry/<id>`).
        #[arg(long)]
        subject: Option<String>,
        /// One human line per event (sequence, time, type, subject, a data summary)
        /// instead of CloudEvents JSON.
        #[arg(long)]
        pretty: bool,
        /// Keep following new events.
        #[arg(long, short)]
        follow: bool,
    },
    /// Publish CloudEvents (structured JSON, one object or an array) from a file or stdin,
    /// validated against the event contract first.
    Publish {
        /// A file; `-` or nothing reads stdin.
        file: Option<std::path::PathBuf>,
    },
}

async fn bus() -> anyhow::Result<EventBus> {
    let common: CommonConfig = imagelib_platform::config::load()?;
    common.validate()?;
    // No `ensure_stream`: the reader and external-publisher users may not create or
    // update the stream, and the CLI has nothing to add to it.
    let bus = EventBus::connect(
        &common.nats_connect(),
        "imagelib-cli",
        common.stream_settings(),
    )
    .await?;
    Ok(bus)
}

pub async fn run(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::Tail {
            from,
            event_type,
            subject,
            pretty,
            follow,
        } => {
            let filter = Filter {
                event_type,
                subject,
            };
            tail(from, &filter, pretty, follow).await
        }
        EventsCommand::Publish { file } => publish(file).await,
    }
}

/// What `events tail` keeps.
#[derive(Debug, Default)]
struct Filter {
    event_type: Option<String>,
    subject: Option<String>,
}

impl Filter {
    fn keeps(&self, env: &imagelib_events::Envelope) -> bool {
        self.event_type
            .as_deref()
            .is_none_or(|t| env.event_type().contains(t))
            && self
                .subject
                .as_deref()
                .is_none_or(|s| env.payload.subject().contains(s))
    }
}

async fn tail(from: u64, filter: &Filter, pretty: bool, follow: bool) -> anyhow::Result<()> {
    use std::io::Write;
    let bus = bus().await?;
    let mut next = from.max(1);
    loop {
        let mut replay = bus.replay(next, None, None).await?;
        let until = replay.until();
        while let Some(item) = replay.next().await {
            let item = item?;
            next = item.sequence + 1;
            let line = match item.event {
                Ok(env) => {
                    if !filter.keeps(&env) {
                        continue;
                    }
                    if pretty {
                        pretty_line(item.sequence, &env)
                    } else {
                        serde_json::to_string(&env.to_cloudevent())?
                    }
                }
                Err(e) if pretty => format!(
                    "{:>6}  not an event of the contract on {}: {e}",
                    item.sequence, item.subject
                ),
                Err(e) => serde_json::json!({"sequence": item.sequence, "subject": item.subject, "error": e.to_string()}).to_string(),
            };
            writeln!(std::io::stdout(), "{line}")?;
        }
        next = next.max(until + 1);
        if !follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Data fields worth a glance, in the order shown.
const SUMMARY_KEYS: &[&str] = &[
    "label",
    "url",
    "registry_type",
    "kind",
    "model_type",
    "digest",
    "old_digest",
    "new_digest",
    "platforms",
    "repository",
    "repositories",
    "tags_seen",
    "added",
    "moved",
    "removed",
    "partial",
    "hm_tag",
    "name",
    "namespace",
    "replicas",
    "revision",
    "reason",
];

/// One line: sequence, time, type (without `io.imagelib.`), subject and a data summary.
pub fn pretty_line(sequence: u64, env: &imagelib_events::Envelope) -> String {
    let subject = env.payload.subject();
    let data = env.payload.to_json();
    let mut parts = Vec::new();
    for key in SUMMARY_KEYS {
        let v = &data[*key];
        let text = match v {
            serde_json::Value::Null => continue,
            serde_json::Value::String(s) if s.is_empty() => continue,
            serde_json::Value::String(s) if s.starts_with("sha256:") => short_digest(s),
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(a) if *key == "platforms" => {
                if a.is_empty() {
                    continue;
                }
                a.iter()
                    .map(|p| {
                        let arch = p["architecture"].as_str().unwrap_or("?");
                        match p["variant"].as_str() {
                            Some(var) => format!("{arch}/{var}"),
                            None => arch.to_owned(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            }
            serde_json::Value::Array(_) | serde_json::Value::Object(_) => continue,
            other => other.to_string(),
        };
        // Already in the subject (a repository, a tag's registry).
        if matches!(v, serde_json::Value::String(_)) && subject.contains(text.as_str()) {
            continue;
        }
        parts.push(format!("{key}={text}"));
    }
    let mut summary = parts.join(" ");
    if summary.chars().count() > 160 {
        summary = summary.chars().take(159).collect::<String>() + "…";
    }
    let event_type = env.event_type();
    format!(
        "{sequence:>6}  {}  {:<28}  {subject}  {summary}",
        env.time.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        event_type
            .strip_prefix("io.imagelib.")
            .unwrap_or(event_type),
    )
    .trim_end()
    .to_owned()
}

fn short_digest(d: &str) -> String {
    crate::catalog_cmd::short_digest(d)
}

async fn publish(file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut text = String::new();
    match file {
        Some(p) if p.as_os_str() != "-" => text = std::fs::read_to_string(&p)?,
        _ => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("the input is not JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(a) => a,
        other => vec![other],
    };
    // Validate everything before publishing anything.
    let mut envelopes = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let bytes = serde_json::to_vec(&item)?;
        let env = imagelib_events::binding::decode_envelope(None, &bytes)
            .map_err(|e| anyhow::anyhow!("event #{i}: {e}"))?;
        envelopes.push(env);
    }
    let bus = bus().await?;
    for env in &envelopes {
        let r = bus.publish(env).await?;
        writeln!(
            std::io::stdout(),
            "{} {} sequence {}{}",
            env.event_type(),
            env.id,
            r.sequence,
            if r.duplicate { " (duplicate)" } else { "" }
        )?;
    }
    Ok(())
}
