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
    let bus = EventBus::connect(&common.nats_url, "imagelib-cli", common.stream_settings()).await?;
    bus.ensure_stream().await?;
    Ok(bus)
}

pub async fn run(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::Tail {
            from,
            event_type,
            follow,
        } => tail(from, event_type, follow).await,
        EventsCommand::Publish { file } => publish(file).await,
    }
}

async fn tail(from: u64, event_type: Option<String>, follow: bool) -> anyhow::Result<()> {
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
                    if event_type
                        .as_deref()
                        .is_some_and(|t| !env.event_type().contains(t))
                    {
                        continue;
                    }
                    serde_json::to_string(&env.to_cloudevent())?
                }
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
