//! The `imagelib` binary: `imagelib serve` (the four services in one process, one HTTP
//! port) and the command-line client.

use imagelib::client::{Client, Connection, exit_code};
use imagelib::{
    catalog_cmd, demo, deploy_cmd, events_cmd, healthcheck, keys_cmd, nats_cmd, registry_cmd, serve,
};

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "imagelib",
    version,
    about = "The Image and Model Library for platform teams"
)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run registry-registry, sync-scanner, catalog-projector and serving-deployer in one
    /// process on one HTTP port (IMAGELIB_HTTP_ADDR, default 127.0.0.1:8080).
    Serve,
    /// Register and manage container registries.
    #[command(subcommand)]
    Registry(registry_cmd::RegistryCommand),
    /// Repository rules: which repositories and tags are discovered, and as what.
    #[command(subcommand)]
    Rules(registry_cmd::RulesCommand),
    /// The Image Library: catalog images and repositories.
    #[command(subcommand)]
    Images(catalog_cmd::ImagesCommand),
    /// The Model Library: model images.
    #[command(subcommand)]
    Models(catalog_cmd::ModelsCommand),
    /// The library's counters: tags, images by kind, repositories, registries.
    Stats,
    /// Read and write the event stream.
    #[command(subcommand)]
    Events(events_cmd::EventsCommand),
    /// The audit trail: who did what, when, with the trace id (`GET /v1/audit`).
    Audit(imagelib::audit_cmd::AuditArgs),
    /// Outbound notifications: subscribe HTTPS endpoints to events (signed CloudEvents),
    /// their dead letters and replays.
    #[command(subcommand)]
    Subscriptions(imagelib::subscriptions_cmd::SubscriptionsCommand),
    /// Retention policies: what a rule's policy would delete, and why (nothing is deleted).
    #[command(subcommand)]
    Lifecycle(imagelib::lifecycle_cmd::LifecycleCommand),
    /// Deploy model images to KServe and provision Postgres from database images.
    #[command(subcommand)]
    Deploy(deploy_cmd::DeployCommand),
    /// Master-key rotation.
    #[command(subcommand)]
    Keys(keys_cmd::KeysCommand),
    /// NATS server configuration: per-service users and permissions.
    #[command(subcommand)]
    Nats(nats_cmd::NatsCommand),
    /// Fill a development registry with sample images and register it (`scripts/run` does).
    Demo(demo::DemoArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Exit 0 when a service answers its readiness probe, 1 otherwise (container
    /// healthchecks in images without curl).
    Healthcheck(healthcheck::HealthcheckArgs),
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // The message and its causes, never a backtrace: the messages say what to do next. The
    // exit code says which class of failure it was (README, "CLI").
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(exit_code(&e))
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve::run().await,
        Command::Healthcheck(args) => healthcheck::run(args).await,
        Command::Events(cmd) => events_cmd::run(cmd).await,
        Command::Keys(cmd) => keys_cmd::run(cmd).await,
        Command::Nats(cmd) => nats_cmd::run(cmd),
        Command::Demo(args) => demo::run(&Client::new(cli.connection)?, args).await,
        Command::Deploy(cmd) => deploy_cmd::run(&Client::new(cli.connection)?, cmd).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "imagelib",
                &mut std::io::stdout(),
            );
            Ok(())
        }
        Command::Registry(cmd) => registry_cmd::run(&Client::new(cli.connection)?, cmd).await,
        Command::Rules(cmd) => registry_cmd::run_rules(&Client::new(cli.connection)?, cmd).await,
        Command::Images(cmd) => catalog_cmd::run_images(&Client::new(cli.connection)?, cmd).await,
        Command::Models(cmd) => catalog_cmd::run_models(&Client::new(cli.connection)?, cmd).await,
        Command::Stats => catalog_cmd::run_stats(&Client::new(cli.connection)?).await,
        Command::Audit(args) => imagelib::audit_cmd::run(&Client::new(cli.connection)?, args).await,
        Command::Subscriptions(cmd) => {
            imagelib::subscriptions_cmd::run(&Client::new(cli.connection)?, cmd).await
        }
        Command::Lifecycle(cmd) => {
            imagelib::lifecycle_cmd::run(&Client::new(cli.connection)?, cmd).await
        }
    }
}
