//! The `catalog-projector` binary: configuration in, service running until SIGTERM;
//! `catalog-projector rebuild` replays the stream into a fresh schema and swaps it in.

use catalog_projector::config::Config;
use catalog_projector::startup::Application;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "catalog-projector",
    version,
    about = "The imagelib catalog: the Image and Model Library"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the catalog API and project the stream (the default).
    Serve,
    /// Replay the whole stream into a fresh schema and swap it in; the running service
    /// keeps answering from the old schema until the swap.
    Rebuild {
        /// Keep the replaced schema (`catalog_old_<timestamp>`) instead of dropping it.
        #[arg(long)]
        keep_old: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = Config::load()?;
    if matches!(cli.command, Some(Command::Rebuild { .. })) {
        // A one-off, often run beside the serving process whose /metrics port it would
        // collide with; nothing scrapes it.
        config.common.metrics_addr = None;
    }
    let _telemetry = imagelib_platform::telemetry::init(catalog_projector::NAME, &config.common)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let app = Application::build(config).await?;
            app.run_until_stopped(imagelib_platform::shutdown::signal())
                .await?;
        }
        Command::Rebuild { keep_old } => {
            config.common.validate()?;
            config.catalog.validate()?;
            config.catalog.keep_old_schema |= keep_old;
            let bus = imagelib_events::bus::EventBus::connect(
                &config.common.nats_connect(),
                "imagelib-catalog-rebuild",
                config.common.stream_settings(),
            )
            .await?;
            bus.ensure_stream().await?;
            let report = catalog_projector::rebuild::rebuild(
                &bus,
                &config.common.database_url,
                catalog_projector::SCHEMA,
                &config.catalog,
            )
            .await?;
            println!(
                "rebuilt `{}` at stream sequence {}: {} events applied, {} skipped, in {:.1} s, peak memory {}{}",
                catalog_projector::SCHEMA,
                report.position,
                report.events,
                report.skipped,
                report.elapsed.as_secs_f64(),
                catalog_projector::rebuild::peak_rss_kb()
                    .map(|kb| format!("{:.1} MB (VmHWM)", kb as f64 / 1024.0))
                    .unwrap_or_else(|| "unknown".into()),
                report
                    .old_schema
                    .map(|s| format!("; the previous catalog is kept as `{s}`"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(())
}
